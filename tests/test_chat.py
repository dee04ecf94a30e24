"""`recipes chat` driven through standard input on the real demo run's merged models: two turns where
the second prompt holds the first, /reset, streaming, Ctrl-C stopping one answer, --prompt, and
one-line errors for a bad RUN or an unfinished stage. Streaming and Ctrl-C need a process of their
own (a pipe read while it writes, a signal); the rest runs the same CLI in this process (click's
runner, standard input and both output streams its own), not once more importing torch each."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

CHAT = [sys.executable, "-m", "recipes", "chat"]
PROMPT = re.compile(r"\[prompt, (\d+) tokens\]\n(.*?)\n\[end of prompt\]\n", re.S)


def chat(*args, stdin: str = "") -> subprocess.CompletedProcess:
    """`recipes chat ARGS`, its standard input ``stdin``: the exit code and both output streams."""
    from click.testing import CliRunner

    from recipes.cli import main

    result = CliRunner().invoke(main, ["chat", *map(str, args)], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_second_turn_holds_the_first_and_reset_clears_it(demo_run):
    run_dir, _ = demo_run
    done = chat(run_dir, "--temperature", "0", "--max-new-tokens", "6", "-v",
                stdin="Where do bees go in winter?\nAnd in spring?\n/reset\nAnd in summer?\n/exit\n")
    assert done.returncode == 0, done.stderr
    prompts = PROMPT.findall(done.stderr)
    assert len(prompts) == 3, done.stderr
    (n1, first), (n2, second), (n3, third) = [(int(n), text) for n, text in prompts]
    answer = done.stdout.split("you> ")[1].rstrip("\n")  # the first answer, as printed
    assert answer and first.endswith("<|im_start|>user\nWhere do bees go in winter?<|im_end|>\n<|im_start|>assistant\n")
    # the second prompt: the first turn (question and the answer printed), then the new question
    assert second == (first + answer + "<|im_end|>\n<|im_start|>user\nAnd in spring?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert n2 > n1
    assert "[conversation cleared]" in done.stdout
    assert "winter" not in third and "spring" not in third and "And in summer?" in third and n3 < n2
    assert "stage 'sft' (sft)" in done.stderr and "chat template" in done.stderr


def test_answers_stream_and_ctrl_c_stops_only_the_answer(demo_run):
    run_dir, _ = demo_run
    process = subprocess.Popen([*CHAT, str(run_dir), "--temperature", "0", "--max-new-tokens", "4000"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(b"Tell me about bees\n")
        process.stdin.flush()
        os.set_blocking(process.stdout.fileno(), False)
        chunks, deadline = [], time.monotonic() + 240
        while len(chunks) < 8 and time.monotonic() < deadline:  # answer text, piece by piece
            try:
                data = os.read(process.stdout.fileno(), 65536)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            assert data, process.stderr.read()
            chunks.append((time.monotonic(), data))
        # eight separate pieces while the 4000-token answer is far from done: the answer streams (no new
        # prompt yet, the process still generating); a wall-clock spread is no test, a fast CPU beats it
        assert len(chunks) == 8 and process.poll() is None
        so_far = b"".join(c for _, c in chunks).decode("utf-8", "replace")
        assert so_far.count("you> ") == 1 and so_far.split("you> ", 1)[1].strip()  # answer text, no next prompt
        process.send_signal(signal.SIGINT)
        os.set_blocking(process.stdout.fileno(), True)
        out, err = process.communicate(b"/reset\n/exit\n", timeout=120)
    finally:
        process.kill()
    text = b"".join(c for _, c in chunks).decode("utf-8", "replace") + out.decode("utf-8", "replace")
    assert process.returncode == 0, err.decode()
    assert " [stopped]\nyou> [conversation cleared]\nyou> " in text  # the program went on
    assert "Traceback" not in err.decode()


def test_prompt_answers_once_and_stdin_gives_the_same(demo_run):
    run_dir, _ = demo_run
    question = "How do bees survive the winter?"
    once = chat(run_dir, "--prompt", question, "--temperature", "0", "--max-new-tokens", "8")
    assert once.returncode == 0, once.stderr
    assert once.stdout.endswith("\n") and "you> " not in once.stdout
    # greedy: the first tokens of the 32-token answer the run kept for this sample
    sample = next(s for s in json.loads((run_dir / "stages" / "sft" / "stage.json").read_text())["samples"]
                  if s["prompt"] == question)
    answer = sample["answer"].replace("\r\n", "\n").replace("\r", "\n")  # stdout read as text: universal newlines
    assert once.stdout[:-1] and answer.startswith(once.stdout[:-1])
    piped = chat(run_dir, "--prompt", "-", "--temperature", "0", "--max-new-tokens", "8", stdin=question + "\n")
    assert piped.returncode == 0 and piped.stdout == once.stdout


def test_pretraining_stage_continues_plain_text(demo_run):
    run_dir, _ = demo_run
    done = chat(run_dir, "--stage", "domain", "--prompt", "A strong colony in spring", "--temperature", "0",
                "--max-new-tokens", "6", "-v")
    assert done.returncode == 0, done.stderr
    [(count, rendered)] = PROMPT.findall(done.stderr)
    assert rendered == "A strong colony in spring" and "<|im_start|>" not in done.stderr
    sample = json.loads((run_dir / "stages" / "domain" / "stage.json").read_text())["samples"][0]
    assert sample["mode"] == "text" and sample["answer"].startswith(done.stdout[:-1])


def test_bad_run_or_unfinished_stage_is_one_line_exit_2(demo_run, tmp_path):
    done = chat(tmp_path / "nothing")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such run folder" in done.stderr
    done = chat(tmp_path)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path}: not a run folder (no manifest.json); " \
                                                   "give the folder `recipes run` printed\n"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(demo_run[0] / "recipe.json", run_dir)
    manifest = json.loads((demo_run[0] / "manifest.json").read_text())
    manifest["stages"]["sft"]["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    done = chat(run_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "stage 'sft' is not done (status: running); run the recipe again to finish it, or give --stage domain" \
        in done.stderr
    done = chat(run_dir, "--stage", "sfx")
    assert done.returncode == 2 and 'no such stage' in done.stderr and 'did you mean "sft"?' in done.stderr


def test_generation_stops_at_a_stop_token(demo_run):
    from recipes.training.inference import generate, load_generator

    generator = load_generator(demo_run[0] / "stages" / "sft" / "merged", "fp32")
    assert generator.tokenizer.convert_tokens_to_ids("<|im_end|>") in generator.stop_ids
    free = generate(generator, "Bees", 3)
    assert (free["new_tokens"], free["stopped"]) == (3, "max_new_tokens")
    generator.stop_ids = [free["ids"][0]]  # the token greedy decoding writes first: it stops at once
    stopped = generate(generator, "Bees", 3)
    assert (stopped["new_tokens"], stopped["stopped"], stopped["answer"]) == (0, "stop token", "")


def test_a_system_message_from_the_flag_and_from_slash_system(demo_run):
    run_dir, _ = demo_run
    done = chat(run_dir, "--system", "You keep bees.", "--temperature", "0", "--max-new-tokens", "2", "-v",
                stdin="Hi\n/system Answer like a bee.\nHello\n/system\nBye\n/exit\n")
    assert done.returncode == 0, done.stderr
    prompts = [text for _, text in PROMPT.findall(done.stderr)]
    assert len(prompts) == 3, done.stderr
    assert prompts[0].startswith("<|im_start|>system\nYou keep bees.<|im_end|>\n<|im_start|>user\nHi<|im_end|>")
    # /system TEXT replaces it and clears the conversation
    assert prompts[1].startswith("<|im_start|>system\nAnswer like a bee.<|im_end|>\n<|im_start|>user\nHello<|im_end|>")
    assert "Hi" not in prompts[1] and "system message set; conversation cleared" in done.stdout
    # /system alone: back to the template's default system message
    assert "Answer like a bee." not in prompts[2] and "You keep bees." not in prompts[2]
    assert prompts[2].startswith("<|im_start|>system\n") and prompts[2].endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")


def test_top_p_reaches_the_sampler(demo_run):
    """Sampling at temperature 1 with a top-p so small that only the likeliest token is kept gives the
    greedy answer; the control, top-p 1 at the same temperature, does not."""
    run_dir, _ = demo_run
    question = "How do bees survive the winter?"
    greedy = next(s for s in json.loads((run_dir / "stages" / "sft" / "stage.json").read_text())["samples"]
                  if s["prompt"] == question)["answer"].replace("\r\n", "\n").replace("\r", "\n")
    answers = {}
    for top_p in ("0.000001", "1.0"):
        done = chat(run_dir, "--prompt", question, "--temperature", "1.5", "--top-p", top_p, "--max-new-tokens", "12")
        assert done.returncode == 0, done.stderr
        answers[top_p] = done.stdout[:-1]
    assert answers["0.000001"] and greedy.startswith(answers["0.000001"])
    assert not greedy.startswith(answers["1.0"])  # sampled from the whole distribution of a random model
