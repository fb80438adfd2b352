"""`charlstm sample`: seeded, greedy, stopped and batched sampling; streaming output; bad input."""

import io
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core import checkpoint as checkpoint_module
from charlstm.core.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.core.engine import packed_weights_available
from charlstm.core.errors import CharlstmError
from charlstm.core.vocab import DOC_SEP, UNK
from charlstm.sampling.sample import Sampler, SampleSettings, engine_dtype
from charlstm.ui.sample_command import StreamWriter, stream_samples

runner = CliRunner()


def sample(*args: str):
    return runner.invoke(app, ["sample", *args])


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


pytestmark = pytest.mark.usefixtures("one_thread")


def sampler_for(path: Path, precision: str = "fp32") -> Sampler:
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    return Sampler(model, vocab, "cpu", precision)


def test_same_seed_gives_the_same_text_and_another_seed_another(lively_checkpoint):
    sampler = sampler_for(lively_checkpoint)
    settings = dict(length=120, prime="class ", temperature=1.0)
    first = sampler.sample_texts(SampleSettings(seed=7, **settings))
    assert first == sampler.sample_texts(SampleSettings(seed=7, **settings))
    assert first != sampler.sample_texts(SampleSettings(seed=8, **settings))
    cli = [str(lively_checkpoint), "-n", "80", "--seed", "3"]
    one, two = sample(*cli), sample(*cli)
    assert one.exit_code == two.exit_code == 0 and one.stdout and one.stdout == two.stdout


@pytest.mark.parametrize("prime", ["", "public class Greeter {\n    "])
def test_greedy_equals_the_argmax_path_of_the_full_forward(lively_checkpoint, prime):
    sampler = sampler_for(lively_checkpoint)
    model, vocab = sampler.model, sampler.vocab
    [text] = sampler.sample_texts(SampleSettings(length=60, prime=prime, greedy=True))
    # Independently: re-run the whole growing text through the fused model, take the argmax.
    tokens = [vocab.doc_sep, *vocab.encode(prime).tolist()]
    with torch.no_grad():
        for _ in range(60):
            logits, _ = model(torch.tensor([tokens]))
            tokens.append(int(logits[0, -1].argmax()))
    assert text == prime + vocab.decode(tokens[1 + len(prime) :])
    assert len(set(text[len(prime) :])) > 3  # a path with some variety, not one repeated symbol


def test_top_k_one_and_a_tiny_top_p_are_greedy(lively_checkpoint):
    sampler = sampler_for(lively_checkpoint)
    greedy = sampler.sample_texts(SampleSettings(length=50, greedy=True))
    assert sampler.sample_texts(SampleSettings(length=50, top_k=1, temperature=2.0, seed=1)) == greedy
    assert sampler.sample_texts(SampleSettings(length=50, top_p=1e-6, temperature=2.0, seed=1)) == greedy


@pytest.mark.parametrize("temperature", [1e-3, 1e-39, 1e-45])
def test_a_tiny_temperature_is_greedy_not_the_first_overflowing_character(lively_checkpoint, temperature):
    # logits / 1e-39 overflow float32 to ±inf; argmax then took the first +inf, not the largest logit.
    sampler = sampler_for(lively_checkpoint)
    greedy = sampler.sample_texts(SampleSettings(length=50, greedy=True))
    assert sampler.sample_texts(SampleSettings(length=50, temperature=temperature, seed=1)) == greedy
    assert sampler.sample_texts(SampleSettings(length=50, temperature=temperature, top_p=0.5, seed=1)) == greedy


def test_prime_goes_through_the_model_once_and_each_character_is_one_step(lively_checkpoint, monkeypatch):
    sampler = sampler_for(lively_checkpoint)
    calls = {"forward": 0, "step": 0}
    forward, step = sampler.model.forward, sampler.engine.step

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(sampler.model, "forward", counting("forward", forward))
    monkeypatch.setattr(sampler.engine, "step", counting("step", step))
    sampler.sample_texts(SampleSettings(length=40, prime="x = 1\n" * 20, num_samples=3, seed=0))
    assert calls == {"forward": 1, "step": 39}  # the first character comes from the prime's logits


def test_a_stop_text_ends_each_sample_of_a_batch_on_its_own(lively_checkpoint):
    sampler = sampler_for(lively_checkpoint)
    base = dict(length=200, temperature=1.0, seed=5, num_samples=3)
    full = sampler.sample_texts(SampleSettings(**base))
    stop = full[0][10:12]  # a text the first sample is known to generate
    stopped = sampler.sample_texts(SampleSettings(stop=stop, **base))
    for whole, cut in zip(full, stopped, strict=True):
        at = whole.find(stop)
        if at >= 0:  # each sample ends right after its own first occurrence of the stop text
            assert cut == whole[: at + len(stop)]
        else:  # a sample that never generates it runs to full length, untouched
            assert cut == whole
    assert len(stopped[0]) <= 12


def test_num_samples_are_independent_and_each_the_right_length(lively_checkpoint):
    sampler = sampler_for(lively_checkpoint)
    texts = sampler.sample_texts(SampleSettings(length=100, prime="if ", temperature=1.0, seed=2, num_samples=4))
    assert len(texts) == 4 and all(len(t) == 103 and t.startswith("if ") for t in texts)
    assert len(set(texts)) == 4
    result = sample(str(lively_checkpoint), "-n", "50", "-N", "3", "--seed", "1", "-t", "1.0")
    assert result.exit_code == 0, result.output
    separators = re.findall(r"^──── sample (\d)/3 ────$", result.stdout, flags=re.M)
    assert separators == ["1", "2", "3"]


def test_piped_output_is_plain_text_with_code_brackets_kept(lively_checkpoint, tmp_path):
    out = tmp_path / "sample.txt"
    prime = "int[] a = {1}; // [bold red]not markup[/bold red]\n"
    result = sample(str(lively_checkpoint), "-n", "300", "--seed", "4", "-p", prime, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert result.stdout.startswith(prime)
    assert out.read_text(encoding="utf-8") == result.stdout
    assert DOC_SEP not in result.stdout


def test_terminal_writer_highlights_lines_and_keeps_the_text():
    buffer = io.StringIO()
    writer = StreamWriter(buffer, color=True, language="java", width=200, keep_plain=True)
    code = 'String s = "[bold]"; // [red]x\n' + DOC_SEP + "int y = 2;" + UNK
    for ch in code:
        writer.write(ch)
    writer.finish()
    shown = buffer.getvalue()
    assert ANSI.search(shown)  # coloured
    # What the eye sees after each redraw: the highlighted line replaces the plain one.
    visible = "\n".join(line.split("\r")[-1] for line in ANSI.sub("", shown).split("\n"))
    assert visible == 'String s = "[bold]"; // [red]x\n── new file ──\nint y = 2;\ufffd\n'
    assert writer.plain == visible


def test_piped_writer_marks_a_new_file_with_a_plain_line():
    buffer = io.StringIO()
    writer = StreamWriter(buffer, color=False, language="java")
    writer.write("a = 1" + DOC_SEP + "b" + DOC_SEP)
    writer.finish()
    assert buffer.getvalue() == "a = 1\n── new file ──\nb\n── new file ──\n"


def test_batched_stream_shows_samples_in_order_while_generating_together(lively_checkpoint):
    sampler = sampler_for(lively_checkpoint)
    settings = SampleSettings(length=80, temperature=1.0, seed=9, num_samples=3, stop="e")
    buffer = io.StringIO()
    texts = stream_samples(sampler, settings, StreamWriter(buffer), keep_texts=True)
    assert texts == sampler.sample_texts(settings)
    shown = buffer.getvalue()
    positions = [shown.index(f"──── sample {i}/3 ────") for i in (1, 2, 3)]
    assert positions == sorted(positions)


def test_the_prime_file_and_unknown_prime_characters(lively_checkpoint, tmp_path):
    prime_file = tmp_path / "prime.java"
    prime_file.write_text("class A { ☃ }", encoding="utf-8")
    result = sample(str(lively_checkpoint), "-n", "20", "--prime-file", str(prime_file))
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "'☃'" in result.stderr
    assert result.stdout.startswith("class A { ☃ }")


def test_a_run_folder_and_reduced_precisions_work(lively_checkpoint):
    result = sample(str(lively_checkpoint.parent), "-n", "40", "--greedy", "--precision", "fp16")
    assert result.exit_code == 0, result.output
    fp32 = sample(str(lively_checkpoint.parent), "-n", "40", "--greedy", "--precision", "fp32")
    # Half-precision weights may flip a near tie late in a greedy path, but not the start of it.
    assert result.stdout[:10] == fp32.stdout[:10]
    int8 = sample(str(lively_checkpoint.parent), "-n", "40", "--seed", "1", "--precision", "int8")
    # int8 runs through FBGEMM; a build without it falls back to float32 weights and says so.
    expected = "qint8" if packed_weights_available(torch.qint8) else "float32"
    assert int8.exit_code == 0 and f"{expected} weights" in int8.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-t", "0"], "--temperature must be > 0"),
        (["-t", "-1"], "--temperature must be > 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["-n", "0"], "--length must be positive"),
        (["-N", "0"], "--num-samples must be at least 1"),
        (["--precision", "fp8"], "unknown precision"),
        (["--prime", "a", "--prime-file", "x"], "not both"),
        (["--prime-file", "no-such-file.txt"], "prime file not found"),
        (["--stop", ""], "--stop must not be empty"),
    ],
)
def test_bad_options_give_one_line_errors(tiny_checkpoint, args, message):
    result = sample(str(tiny_checkpoint), *args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_greedy_needs_no_temperature(tiny_checkpoint):
    assert sample(str(tiny_checkpoint), "-t", "0", "--greedy", "-n", "5").exit_code == 0


def test_empty_prime_file(tiny_checkpoint, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = sample(str(tiny_checkpoint), "--prime-file", str(empty))
    assert result.exit_code == 1 and "is empty" in result.stderr


def test_missing_and_corrupt_checkpoints(tmp_path):
    result = sample(str(tmp_path / "nothing.pt"))
    assert result.exit_code == 1 and "checkpoint not found" in result.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    result = sample(str(corrupt))
    assert result.exit_code == 1 and "corrupt" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("change", [-3, 2])
def test_a_vocabulary_that_does_not_fit_the_model_is_refused(lively_checkpoint, change):
    # Fewer symbols than output rows crashed mid-sample (IndexError); more sampled without a word.
    payload = load_checkpoint(lively_checkpoint)
    extra = ["\u00e9", "\u00fc"]
    payload["vocab"] = payload["vocab"][:change] if change < 0 else payload["vocab"] + extra[:change]
    checkpoint_module.save_checkpoint(lively_checkpoint, payload)
    result = sample(str(lively_checkpoint), "-n", "200", "--seed", "1")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "vocabulary" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_runs_at_all_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoint_module, "PRETRAINED_RUN", tmp_path / "no-shipped-model")
    result = sample("-n", "5")
    assert result.exit_code == 1
    assert "no trained runs" in result.stderr and "charlstm train" in result.stderr
    with pytest.raises(CharlstmError, match="charlstm train"):
        checkpoint_module.resolve_checkpoint(None)


def test_control_characters_cannot_drive_a_terminal_but_pass_through_a_pipe():
    shown, piped = io.StringIO(), io.StringIO()
    text = "a\x1b[31mb\x0cc\td\n"
    terminal = StreamWriter(shown, color=False, terminal=True, keep_plain=True)
    terminal.write(text)
    StreamWriter(piped, color=False, terminal=False).write(text)
    assert shown.getvalue() == "a\u241b[31mb\u240cc\td\n"
    assert piped.getvalue() == text and terminal.plain == text


def test_a_long_prime_is_read_in_chunks_with_the_state_carried(lively_checkpoint, monkeypatch):
    from charlstm.sampling import sample as sample_module

    sampler = sampler_for(lively_checkpoint)
    prime = "return x;\n" * 30
    whole = sampler.sample_texts(SampleSettings(length=30, prime=prime, greedy=True))
    monkeypatch.setattr(sample_module, "PRIME_CHUNK", 7)
    assert sampler.sample_texts(SampleSettings(length=30, prime=prime, greedy=True)) == whole


def test_auto_precision_picks_the_smallest_weights_the_cpu_runs():
    cpu = torch.device("cpu")
    expected = next((dt for dt in (torch.qint8, torch.float16) if packed_weights_available(dt)), torch.float32)
    assert engine_dtype("auto", cpu) == expected
    assert engine_dtype("fp32", cpu) == torch.float32 and engine_dtype("fp16", cpu) == torch.float16


def test_device_auto_picks_cuda_only_where_it_is_present(monkeypatch):
    from charlstm.core.backend import sampling_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sampling_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling_device("auto").type == "cuda"


class _Discard:
    """A stdout that forgets what it is given."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _peak_python_bytes(checkpoint: Path, length: int, num_samples: int = 1) -> int:
    import tracemalloc

    from charlstm.ui.sample_command import run_sampling

    settings = SampleSettings(length=length, seed=1, temperature=1.0, num_samples=num_samples)
    tracemalloc.start()
    try:
        run_sampling(str(checkpoint), settings, color=False, precision="fp32", console=_QuietConsole())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class _QuietConsole:
    def print(self, *args, **kwargs):
        pass


@pytest.mark.parametrize("num_samples", [1, 2])
def test_sampling_without_out_keeps_no_text_that_has_been_shown(tiny_checkpoint, monkeypatch, num_samples):
    """Without -o, what has been printed is not kept: memory does not grow with --length (two
    samples: only the second, still waiting for its turn, is kept)."""
    monkeypatch.setattr("sys.stdout", _Discard())
    short = _peak_python_bytes(tiny_checkpoint, 1500, num_samples)
    long = _peak_python_bytes(tiny_checkpoint, 7500, num_samples)
    # Before: two lists of 8-byte references per character and sample (over 96 KB more for 6,000
    # characters); a sample waiting its turn costs about a byte per character.
    assert long - short < 6000 * (num_samples - 1) * 2 + 24_000


def test_one_seed_bound_for_every_command(lively_checkpoint):
    """sample, train and experiment take the same seeds: 2**63 - 1 and below. Training seeds
    torch with seed + rank + step, which must stay within what torch.manual_seed takes."""
    from charlstm.analysis.experiments import configured_study
    from charlstm.core.config import MAX_SEED, MAX_STEPS, TrainConfig

    assert MAX_SEED == 2**63 - 1
    assert MAX_SEED + 4096 + MAX_STEPS <= 2**64 - 1  # any rank a machine room has, the last step
    torch.Generator().manual_seed(MAX_SEED + 4096 + MAX_STEPS)  # and torch takes it
    SampleSettings(seed=MAX_SEED).validate()
    TrainConfig(seed=MAX_SEED).validate()
    configured_study("counter", seed=MAX_SEED)
    for refuse in (
        lambda: SampleSettings(seed=MAX_SEED + 1).validate(),
        lambda: TrainConfig(seed=MAX_SEED + 1).validate(),
        lambda: configured_study("counter", seed=MAX_SEED + 1),
    ):
        with pytest.raises(CharlstmError, match="--seed must be between 0 and 9223372036854775807"):
            refuse()
    top = sampler_for(lively_checkpoint).sample_texts(SampleSettings(length=5, seed=MAX_SEED))
    assert len(top[0]) == 5
