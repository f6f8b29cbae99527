"""The flag table of a real engine, read from its own argument parser (no GPU needed).

    python engine_flags.py vllm|sglang OUT.json

Writes one JSON object: the engine, its version, whether the parser accepts unique prefixes
of long options (argparse allow_abbrev), every option (kind, type, choices, the spellings the
parser accepts, deprecation) and the names of the engine's environment variables. The kind
and the type are read by behaviour: the action class, nargs, and what the option's type
function accepts, so a custom type (vLLM's human-readable ints, JSON configs) is classified by
what it does, not by its name.
"""

import argparse
import importlib.metadata
import json
import re
import sys


def load(engine):
    if engine == "vllm":
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        import vllm.envs

        parser = make_arg_parser(FlexibleArgumentParser())
        env = sorted(vllm.envs.environment_variables)
        version = importlib.metadata.version("vllm").split("+")[0]
    else:
        from sglang.srt.server_args import ServerArgs
        from sglang.srt import environ

        parser = argparse.ArgumentParser()
        ServerArgs.add_cli_args(parser)
        env = sorted(sglang_env_names(environ))
        version = importlib.metadata.version("sglang")
    return parser, env, version


def sglang_env_names(environ):
    """SGLang declares most variables as `EnvField` attributes of `environ.Envs` (with their
    deprecated aliases); others are read directly (`get_bool_env_var("SGLANG_...")`). Both
    count: the fields, and every `SGLANG_*` / `SGL_*` string literal in the package's code."""
    import os
    import sglang

    names = set()
    for value in vars(environ.Envs).values():
        if isinstance(value, environ.EnvField):
            names.add(value.name)
            if getattr(value, "deprecated_name", None):
                names.add(value.deprecated_name)
    literal = re.compile(r"[\"'](SGLANG_[A-Z0-9_]*[A-Z0-9]|SGL_[A-Z0-9_]*[A-Z0-9])[\"']")
    root = os.path.dirname(sglang.__file__)
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as src:
                    names.update(literal.findall(src.read()))
    return names


def accepts(fn, text):
    try:
        fn(text)
        return True
    except BaseException:  # argparse types raise anything (ValueError, TypeError, SystemExit)
        return False


def type_of(action):
    fn = action.type
    if fn is None:
        return "str"
    if fn is int:
        return "int"
    if fn is float:
        return "float"
    if fn is str:
        return "str"
    ok = {t: accepts(fn, t) for t in ["1", "1.5", "abc", "{}", "true", "32k"]}
    if ok["{}"]:
        try:
            if not isinstance(fn("{}"), str):
                # json.loads takes any JSON; a config type (vLLM's CompilationConfig) only an
                # object.
                return "json" if ok["1"] else "json_object"
        except BaseException:
            pass
    if ok["1"] and not ok["1.5"] and not ok["abc"]:
        return "human_int" if ok["32k"] else "int"
    if ok["1.5"] and not ok["abc"]:
        return "float"
    if ok["true"] and not ok["abc"] and not ok["1.5"]:
        return "bool"
    return "str"


def kind_of(action, type_name):
    name = type(action).__name__
    if name == "BooleanOptionalAction":
        return "bool_optional"
    if action.nargs == 0:
        return "flag"
    if type_name in ("json", "json_object"):
        return "json"
    if action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1):
        return "list"
    if isinstance(action, argparse._AppendAction):
        return "list"
    return "value"


def deprecated(parser, action):
    if getattr(action, "deprecated", False) or action in getattr(parser, "_deprecated", ()):
        return True
    return "deprecated" in (action.help or "").lower() or "Deprecated" in type(action).__name__


def options(parser):
    out = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs:
            continue
        type_name = type_of(action) if action.nargs != 0 else "none"
        kind = kind_of(action, type_name)
        # The canonical name: the dest's spelling when the parser has it, else the first long.
        dest = "--" + action.dest.replace("_", "-")
        name = dest if dest in longs else longs[0]
        spellings = [s for s in action.option_strings if s != name]
        negated = None
        if kind == "bool_optional":
            negated = [s for s in spellings if s.startswith("--no-")]
            spellings = [s for s in spellings if not s.startswith("--no-")]
        entry = {
            "name": name[2:],
            "kind": kind,
            "type": type_name,
        }
        if negated:
            entry["no_form"] = negated[0][2:]
        if action.choices is not None:
            entry["choices"] = sorted({str(c) for c in action.choices})
        if spellings:
            entry["aliases"] = spellings
        if deprecated(parser, action):
            entry["deprecated"] = True
        out.append(entry)
    return sorted(out, key=lambda e: e["name"])


def main():
    engine, path = sys.argv[1], sys.argv[2]
    parser, env, version = load(engine)
    opts = options(parser)
    if engine == "vllm":
        # FlexibleArgumentParser rewrites `-O3` / `-O 3` before argparse sees it; record the
        # short spelling only if the real parser does turn it into --optimization-level.
        if getattr(parser.parse_args(["-O3"]), "optimization_level", None) == "3":
            for o in opts:
                if o["name"] == "optimization-level":
                    o.setdefault("aliases", []).append("-O")
    # vLLM's parser also takes dotted keys into JSON-valued options (`--compilation-config.mode
    # 3`); plain argparse (SGLang) does not. Asked of the parser, not assumed.
    dotted = False
    if engine == "vllm":
        try:
            ns = parser.parse_args(["--compilation-config.mode", "3"])
            dotted = getattr(ns, "compilation_config", None) is not None
        except BaseException:
            dotted = False
    table = {
        "engine": engine,
        "version": version,
        "generated_by": "tests/real-engine/gen-flags.sh",
        "allow_abbrev": bool(parser.allow_abbrev),
        "dotted_json_keys": dotted,
        "options": opts,
        "env": env,
    }
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"{engine} {version}: {len(table['options'])} options, {len(env)} env names -> {path}")


if __name__ == "__main__":
    main()
