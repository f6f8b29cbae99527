"""Parses aim-engine's engine command lines with the real engine's own parser, then turns
each into the engine's config object, as the engine does at start:

    python check_recipes.py vllm|sglang COMMANDS.json

COMMANDS.json is a list of {"recipe": ..., "argv": [...]} (argv as aim-engine would exec
it). vLLM: `make_arg_parser(FlexibleArgumentParser())` then `AsyncEngineArgs.from_cli_args`;
SGLang: `ServerArgs.add_cli_args(argparse.ArgumentParser())` then `ServerArgs.from_cli_args`.
An argparse error (unknown or ambiguous flag, a bad value: argparse exits 2) or an exception
while building the config fails that recipe. Prints one line per recipe; exits 1 if any
failed.
"""

import argparse
import contextlib
import io
import json
import sys


def engine_words(engine, argv):
    """The words the engine's parser sees: after `serve` for vLLM (the model is the
    positional model_tag), after `-m sglang.launch_server` for SGLang."""
    if engine == "vllm":
        return argv[argv.index("serve") + 1 :]
    return argv[argv.index("-m") + 2 :]


def checker(engine):
    if engine == "vllm":
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        def check(words):
            parser = make_arg_parser(FlexibleArgumentParser())
            ns = parser.parse_args(words)
            if getattr(ns, "model_tag", None):
                ns.model = ns.model_tag
            AsyncEngineArgs.from_cli_args(ns)

        return check
    from sglang.srt.server_args import ServerArgs

    def check(words):
        parser = argparse.ArgumentParser(prog="launch_server.py")
        ServerArgs.add_cli_args(parser)
        ns = parser.parse_args(words)
        ServerArgs.from_cli_args(ns)

    return check


def main():
    engine, path = sys.argv[1], sys.argv[2]
    commands = json.load(open(path))
    check = checker(engine)
    failed = 0
    for c in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                check(engine_words(engine, c["argv"]))
            print(f"ok    {engine} {c['recipe']}")
        except SystemExit as e:
            failed += 1
            text = err.getvalue().strip().splitlines()
            print(f"FAIL  {engine} {c['recipe']}: the parser exits {e.code}: {text[-1] if text else ''}")
        except Exception as e:  # the config object refused the values
            failed += 1
            print(f"FAIL  {engine} {c['recipe']}: {type(e).__name__}: {e}")
    print(f"{engine}: {len(commands) - failed}/{len(commands)} recipes parse")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
