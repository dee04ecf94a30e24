"""``recipes chat RUN``: talk to a finished stage's merged model in the terminal.

Tokens are printed as they are generated. An SFT stage whose tokenizer has a chat template keeps a
multi-turn conversation through that template (``/reset`` clears it, ``/system TEXT`` sets the system
message, ``/exit`` or end of input leaves); a pre-training stage, or a model without a chat template,
continues each prompt as plain text. Ctrl-C stops the answer being written, not the program.
``--prompt TEXT`` answers once and exits. The run folder is checked before torch is imported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from recipes.errors import Interrupted, RecipeError
from recipes.config.schema import did_you_mean
from recipes.run.manifest import MANIFEST_NAME, Manifest, read_json_object

COMMANDS = "/reset, /system TEXT, /exit"


@dataclass(frozen=True)
class ChatTarget:
    """A finished stage of a run folder: its merged model and how it was trained."""

    run_dir: Path
    stage: str
    kind: str  # "pretrain" or "sft"
    folder: Path  # the merged model
    precision: str | None  # as the stage trained
    trust_remote_code: bool


def chat_target(run_dir: Path, stage: str | None = None) -> ChatTarget:
    """The stage to chat with (default: the last one), checked: the run folder, its manifest, that
    the stage is done and its merged model is there. No torch."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: no such run folder; give the folder `recipes run` printed")
    if not (run_dir / MANIFEST_NAME).is_file():
        raise RecipeError(f"{run_dir}: not a run folder (no {MANIFEST_NAME}); give the folder `recipes run` printed")
    manifest = Manifest.load(run_dir)
    recipe = read_json_object(run_dir / "recipe.json")
    kinds = {s.get("name"): s.get("kind") for s in recipe.get("stages", []) if isinstance(s, dict)}
    for name, entry in manifest.data.get("stages", {}).items():
        kinds.setdefault(name, ((entry.get("parts") or {}).get("kind")))
    if not kinds:
        raise RecipeError(f"{run_dir}: the run has no stage yet; run the recipe first")
    name = stage or list(kinds)[-1]
    if name not in kinds:
        raise RecipeError(f"--stage {name}: no such stage in {run_dir}; {did_you_mean(name, list(kinds))}")
    entry = manifest.stage(name) or {}
    if entry.get("status") != "done":
        done = [n for n in kinds if (manifest.stage(n) or {}).get("status") == "done"]
        raise RecipeError(f"stage {name!r} is not done (status: {entry.get('status', 'not started')}); run the "
                          "recipe again to finish it" + (f", or give --stage {done[-1]}" if done else ""))
    folder = run_dir / ((entry.get("outputs") or {}).get("merged") or {}).get("path", f"stages/{name}/merged")
    if not (folder / "config.json").is_file():
        raise RecipeError(f"{folder}: the stage's merged model is missing; run the stage again "
                          f"(recipes run RECIPE --restart {name})")
    result = entry.get("result") or read_json_object(run_dir / "stages" / name / "stage.json")
    trust = bool(((recipe.get("recipe") or {}).get("model") or {}).get("trust_remote_code", False))
    return ChatTarget(run_dir, name, kinds[name] or "sft", folder, result.get("precision"), trust)


class PrintStreamer:
    """A streamer for ``generate``: prints the answer's text as tokens arrive (whole characters only),
    and keeps what it printed (the answer so far, when Ctrl-C stops it)."""

    def __init__(self, tokenizer, out, skip_ids):
        self.tokenizer, self.out, self.skip = tokenizer, out, set(skip_ids)
        self.ids: list[int] = []
        self.text = ""
        self._prompt = True

    def put(self, value) -> None:
        if self._prompt:  # generate passes the prompt first
            self._prompt = False
            return
        self.ids += [i for i in value.reshape(-1).tolist() if i not in self.skip]
        self._show(final=False)

    def end(self) -> None:
        self._show(final=True)

    def _show(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if (text.endswith("\ufffd") and not final) or not text.startswith(self.text):
            return  # half a character so far
        self.out.write(text[len(self.text):])
        self.out.flush()
        self.text = text


@dataclass
class Options:
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    system: str | None = None
    verbose: bool = False


def run_chat(target: ChatTarget, prompt: str | None, options: Options, out=None, err=None) -> None:
    """Load the stage's model; answer ``prompt`` once (``-``: standard input), or chat until /exit."""
    out, err = out or sys.stdout, err or sys.stderr
    if prompt == "-":
        prompt = sys.stdin.read().removesuffix("\n")
    from recipes.training.inference import load_generator

    try:
        generator = load_generator(target.folder, target.precision, target.trust_remote_code,
                                   lambda note: err.write(f"note: {note}\n"))
    except KeyboardInterrupt:
        raise Interrupted("the model was still loading") from None
    session = Session(generator, generator.mode(target.kind), options, out, err)
    if prompt is not None:
        session.answer(prompt)
        return
    how = ("a conversation through its chat template" if session.mode == "chat"
           else "plain text completion: each prompt is continued on its own")
    err.write(f"stage {target.stage!r} ({target.kind}) from {target.folder} on {generator.device} in "
              f"{generator.precision}: {how}. {COMMANDS}; Ctrl-C stops an answer.\n")
    err.flush()
    session.loop()


class Session:
    """One chat: the conversation so far and the commands."""

    def __init__(self, generator, mode: str, options: Options, out, err):
        self.generator, self.mode, self.options, self.out, self.err = generator, mode, options, out, err
        self.system = options.system
        self.history: list[dict] = []

    def loop(self) -> None:
        if sys.stdin.isatty():
            import readline  # noqa: F401  (line editing and history for input())
        while True:
            try:
                line = input("you> ")
            except EOFError:
                self.out.write("\n")
                return
            except KeyboardInterrupt:
                self.out.write("\n(/exit leaves)\n")
                continue
            if not line.strip():
                continue
            if line.strip().startswith("/"):
                if self.command(line.strip()):
                    return
                continue
            self.answer(line)

    def command(self, line: str) -> bool:
        """Run a /command; True when the chat ends. A line that is no command is a prompt."""
        word, _, rest = line.partition(" ")
        if word == "/exit":
            return True
        if word == "/reset":
            self.history = []
            self.note("conversation cleared")
        elif word == "/system":
            self.system, self.history = rest.strip() or None, []
            self.note("system message " + ("set" if self.system else "back to the template's default")
                      + "; conversation cleared")
        else:
            self.note(f"unknown command {word}; the commands: {COMMANDS}")
        return False

    def note(self, text: str) -> None:
        if self.mode != "chat":
            text += " (plain completion keeps no conversation)"
        self.out.write(f"[{text}]\n")
        self.out.flush()

    def answer(self, prompt: str) -> str:
        from recipes.training.inference import generate, render

        messages = [*([{"role": "system", "content": self.system}] if self.system else []), *self.history,
                    {"role": "user", "content": prompt}]
        rendered = render(self.generator, self.mode, messages, prompt)
        if self.options.verbose:
            count = len(self.generator.tokenizer(rendered, add_special_tokens=False)["input_ids"])
            self.err.write(f"[prompt, {count} tokens]\n{rendered}\n[end of prompt]\n")
            self.err.flush()
        streamer = PrintStreamer(self.generator.tokenizer, self.out, self.generator.stop_ids)
        o = self.options
        try:
            answer = generate(self.generator, rendered, o.max_new_tokens, o.temperature, o.top_p, streamer)["answer"]
        except KeyboardInterrupt:
            answer = streamer.text
            self.out.write(" [stopped]")
        self.out.write("\n")
        self.out.flush()
        if self.mode == "chat":
            self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return answer
