"""Writes the real-engine suite's test model: a random-weight Llama small enough to serve on
two CPU cores, as a plain folder and inside a Hugging Face cache.

    python make_model.py OUT [--hf-home HF_HOME] [--repo-id aim-test/tiny-llama]

OUT/ gets config.json, model.safetensors, tokenizer files, generation_config.json and a chat
template. With --hf-home the same files go into HF_HOME/hub/models--<org>--<name>/ in the
layout huggingface_hub writes (blobs named by their hash, snapshots/<commit>/ links into the
blobs, refs/main naming the commit), so `serve <org>/<name>` works with HF_HUB_OFFLINE=1
exactly as for a model downloaded from the Hub.

Shape: hidden 256, 2 layers, 4 heads, 2 KV heads (head_dim 64: vLLM's CPU attention kernel
rejects head_dim 16), vocab from a byte-level BPE trained on a few sentences. About 2.7 MB.
Run it with the real-engine venv's python (it needs transformers, tokenizers and torch).
Deterministic: the same seed and corpus give the same bytes, so the cache commit is stable.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "aim-engine supervises vLLM and SGLang on AMD Instinct GPUs.",
    "Hello, world! This is a tiny model with random weights.",
    "Once upon a time there was a container that started the right engine.",
    "0 1 2 3 4 5 6 7 8 9 ten eleven twelve",
    "user assistant system: what is the answer? The answer is forty-two.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def write_model(out: str) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, max_new_tokens=16
    ).save_pretrained(out)
    # Some chat-template readers look for the template as its own file too.
    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_cache(src: str, hf_home: str, repo_id: str) -> str:
    """Copies the files of `src` into the Hub cache layout; returns the snapshot folder."""
    org, name = repo_id.split("/", 1)
    repo = os.path.join(hf_home, "hub", f"models--{org}--{name}")
    files = sorted(f for f in os.listdir(src) if os.path.isfile(os.path.join(src, f)))
    # The commit names the content, as a Hub commit would: same files, same commit.
    commit = hashlib.sha1(
        "".join(f"{f}:{sha256(os.path.join(src, f))}\n" for f in files).encode()
    ).hexdigest()
    snapshot = os.path.join(repo, "snapshots", commit)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    for f in files:
        digest = sha256(os.path.join(src, f))
        blob = os.path.join(repo, "blobs", digest)
        if not os.path.exists(blob):
            shutil.copyfile(os.path.join(src, f), blob)
        link = os.path.join(snapshot, f)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(blob, snapshot), link)
    with open(os.path.join(repo, "refs", "main"), "w") as ref:
        ref.write(commit)
    return snapshot


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write the model into")
    ap.add_argument("--hf-home", help="also write it into this HF_HOME's hub cache")
    ap.add_argument("--repo-id", default="aim-test/tiny-llama", help="the id in the cache")
    args = ap.parse_args()
    if "/" not in args.repo_id:
        ap.error(f"--repo-id {args.repo_id!r}: expected org/name")
    # Write next to OUT and rename, so an interrupted run never leaves a half model behind.
    parent = os.path.dirname(os.path.abspath(args.out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-model-", dir=parent)
    try:
        write_model(tmp)
        os.chmod(tmp, 0o755)
        for f in os.listdir(tmp):
            os.chmod(os.path.join(tmp, f), 0o644)
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        os.rename(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(args.out)
    if args.hf_home:
        print(write_cache(args.out, args.hf_home, args.repo_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
