"""`charlstm ingest`: every file accounted for, exact round trip, and a clean failure for every bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import charlstm.corpus.sources as sources_module
from charlstm.cli import app
from charlstm.core.errors import CharlstmError
from charlstm.core.userio import decode_source
from charlstm.core.vocab import DOC_SEP, UNK
from charlstm.corpus.dataset import load_dataset
from charlstm.corpus.ingest import ingest
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET

runner = CliRunner()


def java_class(name: str) -> str:
    """A distinct small Java file (distinct, so the duplicate filter keeps it)."""
    return JAVA_SNIPPET.replace("Greeter", name)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def run_ingest(*args: str):
    return runner.invoke(app, ["ingest", *args])


def assert_clean_failure(result, *fragments: str) -> str:
    """A non-zero exit with one red line on stderr that names the problem, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(message.splitlines()) == 1, message
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in message, message
    return message


def no_leftovers(data_dir: Path) -> list[str]:
    """Whatever an ingest left in the data folder (temp folders included)."""
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def java_tree(tmp_path) -> Path:
    """A Java project with one file of every kind the filters must tell apart."""
    root = tmp_path / "proj"
    for i in range(12):
        write(root / "src" / "main" / "java" / "org" / f"Class{i}.java", java_class(f"Class{i}"))
    write(root / "src" / "main" / "java" / "org" / "Copy.java", java_class("Class3"))  # duplicate of Class3
    write(root / "src" / "Binary.java", b"public class Binary {\x00\x01\x02}")
    write(root / "src" / "Huge.java", "// big\n" * 2000)  # 14 KB, over --max-file-bytes 10000
    write(root / "src" / "Empty.java", "")
    write(root / "README.md", "# docs are not code\n")
    write(root / "node_modules" / "dep" / "Vendored.java", java_class("Vendored"))
    write(root / "build" / "Generated.java", java_class("Generated"))
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    (root / "src" / "loop").symlink_to(root / "src")  # a folder symlink back up the tree
    (root / "src" / "Self.java").symlink_to(root / "src" / "Self.java")  # a link to itself
    (root / "src" / "Link.java").symlink_to(root / "src" / "main" / "java" / "org" / "Class0.java")
    return root


# ------------------------------------------------------------------------------ the main case


def test_java_tree_accounts_for_every_file_and_splits_by_file(java_tree, tmp_path):
    data = tmp_path / "data"
    result = run_ingest(
        str(java_tree),
        "--name",
        "x",
        "--ext",
        ".java",
        "--max-file-bytes",
        "10000",
        "--data-dir",
        str(data),
        "--json",
        "--val-fraction",
        "0.2",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_kept"] == 12
    assert report["files_skipped"] == {
        "excluded-folder": 3,
        "duplicate": 2,
        "binary": 1,
        "too-large": 1,
        "empty": 1,
        "extension": 1,
        "symlinked-folder": 1,
        "broken-symlink": 1,
    }
    assert report["train_chars"] + report["val_chars"] == sum(len(java_class(f"Class{i}")) + 1 for i in range(12))
    ds = load_dataset(data / "x")
    assert ds.language == "java" and ds.meta["dtype"] == "uint8"
    assert report["vocab_size"] == len(ds.vocab)

    # Every file on disk is listed, or lies under a listed skipped folder.
    listed = {e["path"]: e for e in ds.meta["files"]}
    skipped_folders = [p for p, e in listed.items() if p.endswith("/")]
    for path in java_tree.rglob("*"):
        rel = path.relative_to(java_tree).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        assert rel in listed or rel + "/" in listed or any(rel.startswith(f) for f in skipped_folders), rel
    assert listed["src/main/java/org/Copy.java"]["duplicate_of"] == "src/main/java/org/Class3.java"
    # A symlinked file is read like any other; its target is then recognised as the same content.
    assert listed["src/main/java/org/Class0.java"]["duplicate_of"] == "src/Link.java"
    assert listed["node_modules/"]["reason"] == "excluded-folder"

    splits = {e["path"]: e["split"] for e in ds.meta["files"] if "split" in e}
    train = {p for p, s in splits.items() if s == "train"}
    val = {p for p, s in splits.items() if s == "val"}
    assert train and val and not train & val and len(train | val) == 12
    assert report["train_files"] == len(train) and report["val_files"] == len(val)
    assert ds.meta["val_chars"] <= 0.2 * (ds.meta["train_chars"] + ds.meta["val_chars"])
    for key in ("vocab_counts", "sources", "min_char_count", "val_fraction", "seed", "extensions", "content_hash"):
        assert key in ds.meta
    assert sum(ds.meta["vocab_counts"]) == ds.meta["train_chars"] + ds.meta["val_chars"]
    assert not [p for p in no_leftovers(data) if p != "x"]


def test_round_trip_reproduces_the_files_joined_by_the_separator(tmp_path):
    src = tmp_path / "src"
    texts = {
        "a.py": PYTHON_SNIPPET,
        "b.py": "x = 1\r\ny = 2\rz = 3\n",  # Windows and old-Mac newlines
        "c.py": "\ufeffs = 'caf\u00e9 \u2192 \U0001f600'\n",  # byte-order mark, accents, an emoji
        "d.py": "weird = '\x1c'\n",  # the separator itself inside source text
        "e.py": "# bad byte: \xff\n" + "pass\n" * 40,
    }
    for name, text in texts.items():
        data = text.encode("latin-1") if name == "e.py" else text.encode("utf-8")
        write(src / name, data)
    report = ingest([str(src)], "rt", data_dir=tmp_path / "data", val_fraction=0.3)
    ds = load_dataset(tmp_path / "data" / "rt")
    expected = {
        "a.py": PYTHON_SNIPPET,
        "b.py": "x = 1\ny = 2\nz = 3\n",
        "c.py": "s = 'caf\u00e9 \u2192 \U0001f600'\n",
        "d.py": f"weird = '{UNK}'\n",
        "e.py": f"# bad byte: {UNK}\n" + "pass\n" * 40,
    }
    for split in ("train", "val"):
        names = [e["path"] for e in ds.meta["files"] if e.get("split") == split]
        assert ds.vocab.decode(ds.tokens(split)) == "".join(DOC_SEP + expected[n] for n in names)
    entry = {e["path"]: e for e in ds.meta["files"]}["e.py"]
    assert entry["invalid_bytes"] == 1 and report["invalid_bytes"] == 1
    assert ds.vocab.symbols[:2] == [DOC_SEP, UNK]
    assert report["unk_rate"] > 0


def test_data_dir_inside_the_source_and_undecodable_file_names(tmp_path):
    src = tmp_path / "src"
    write(src / "a.py", PYTHON_SNIPPET)
    write(Path(os.fsdecode(bytes(src) + b"/caf\xe9.py")), "x = 1\n")  # a file name that is not UTF-8
    report = ingest([str(src)], "in", data_dir=src / "data")
    assert report["files_kept"] == 2
    meta = json.loads((src / "data" / "in" / "meta.json").read_text(encoding="utf-8"))
    assert "caf\udce9.py" in {e["path"] for e in meta["files"]}
    again = ingest([str(src)], "again", data_dir=src / "data")
    assert again["files_kept"] == 2  # the first dataset's files are not source code


def test_languages_are_pygments_lexers():
    from pygments.lexers import LEXERS  # the lexer table, without importing every lexer

    known = {alias for _module, _name, aliases, _files, _mimes in LEXERS.values() for alias in aliases}
    assert set(sources_module.LANGUAGES.values()) <= known
    assert sources_module.language_for_extension(".groovy") == "groovy"  # asked of Pygments itself


def test_decoding_counts_invalid_bytes():
    assert decode_source(b"ok\r\n") == ("ok\n", 0)
    text, invalid = decode_source(b"a\xff\xfeb\xe2\x82")  # two stray bytes, then a truncated sequence
    assert text.startswith("a") and "b" in text and invalid == 4


def test_rare_characters_map_to_unknown_and_the_split_is_deterministic(tmp_path):
    src = tmp_path / "src"
    for i in range(20):
        write(src / f"m{i}.py", PYTHON_SNIPPET.replace("greet", f"greet{i}"))
    write(src / "rare.py", "z = 'Q'\n")
    common = dict(data_dir=tmp_path / "data", min_char_count=2)
    first = ingest([str(src)], "a", seed=1, **common)
    again = ingest([str(src)], "b", seed=1, **common)
    other = ingest([str(src)], "c", seed=2, **common)
    assert first["content_hash"] == again["content_hash"] != other["content_hash"]
    ds = load_dataset(tmp_path / "data" / "a")
    assert not {"Q", "z", "="} & set(ds.vocab.symbols) and {"g", "'"} <= set(ds.vocab.symbols)
    assert ds.meta["vocab_counts"][1] == 3  # 'Q', 'z' and '=' each seen once


def test_a_high_unknown_share_is_warned_about(tmp_path):
    src = tmp_path / "src"
    for i in range(20):
        write(src / f"m{i}.py", PYTHON_SNIPPET.replace("greet", f"greet{i}"))
    write(src / "rare.py", "z = 'Q'\n")
    data = str(tmp_path / "data")
    assert ingest([str(src)], "a", data_dir=data, min_char_count=2)["warnings"] == []  # 3 rare ones
    result = run_ingest(str(src), "--name", "b", "--data-dir", data, "--min-char-count", "1000000", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unk_rate"] > 0.99
    [warning] = report["warnings"]
    assert f"{report['unk_rate']:.2%} of the characters" in warning and "--min-char-count 1000000" in warning
    assert "above 1%" in warning
    assert "warning:" in result.stderr and "--min-char-count 1000000" in result.stderr


# --------------------------------------------------------------------------------- presets


def test_preset_python_stdlib_skips_tests_and_installed_packages(tmp_path, monkeypatch):
    lib = tmp_path / "lib" / "python3"
    write(lib / "os.py", PYTHON_SNIPPET)
    write(lib / "json" / "__init__.py", PYTHON_SNIPPET.replace("greet", "dump"))
    write(lib / "venv" / "__init__.py", PYTHON_SNIPPET.replace("greet", "create"))  # the stdlib's venv module
    write(lib / "idlelib" / "idle_test" / "test_x.py", "assert True\n")
    write(lib / "test" / "test_os.py", "assert 1\n")
    write(lib / "site-packages" / "pkg.py", "installed = True\n")
    write(lib / "__pycache__" / "os.cpython-311.pyc", b"\x00\x01")
    write(lib / "some-env" / "pyvenv.cfg", "home = /usr\n")
    write(lib / "some-env" / "mod.py", "in_a_virtualenv = True\n")
    monkeypatch.setattr(sources_module.sysconfig, "get_paths", lambda: {"stdlib": str(lib)})
    data = tmp_path / "data"
    result = run_ingest("--data-dir", str(data), "--json")  # no SOURCE: the python-stdlib preset
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "python-stdlib" and report["files_kept"] == 3
    assert report["files_skipped"] == {"excluded-folder": 5}
    ds = load_dataset(data / "python-stdlib")
    assert ds.language == "python" and ds.meta["sources"][0]["source"] == "python-stdlib"


def make_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def test_preset_jdk_reads_src_zip_from_java_home(tmp_path, monkeypatch):
    home = tmp_path / "jdk"
    (home / "lib").mkdir(parents=True)
    make_zip(
        home / "lib" / "src.zip",
        {
            "java.base/java/lang/A.java": java_class("A"),
            "java.base/java/lang/B.java": java_class("B"),
            "java.base/module-info.class": b"\xca\xfe\xba\xbe",
        },
    )
    monkeypatch.setenv("JAVA_HOME", str(home))
    result = run_ingest("--preset", "jdk", "--data-dir", str(tmp_path / "data"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "jdk" and report["files_kept"] == 2 and report["language"] == "java"
    assert report["files_skipped"] == {"extension": 1}


def test_preset_jdk_missing_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sources_module, "glob", lambda pattern: [])
    result = run_ingest("--preset", "jdk", "--data-dir", str(tmp_path / "data"))
    assert_clean_failure(result, "no JDK sources", str(tmp_path / "nojdk" / "lib" / "src.zip"))
    assert no_leftovers(tmp_path / "data") == []


# ------------------------------------------------------------------------ git and archives


def git(*args, cwd=None):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_url_is_cloned_and_the_clone_removed(tmp_path):
    work = tmp_path / "work"
    write(work / "A.java", java_class("A"))
    write(work / "B.java", java_class("B"))
    git("init", "-q", str(work))
    git("add", ".", cwd=work)
    git("commit", "-qm", "two classes", cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    data = tmp_path / "data"
    result = run_ingest(bare.as_uri(), "--name", "g", "--data-dir", str(data), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_kept"] == 2 and report["files_skipped"] == {"excluded-folder": 1}  # the clone's .git
    source = load_dataset(data / "g").meta["sources"][0]
    assert source["kind"] == "git" and len(source["commit"]) == 40
    assert no_leftovers(data) == ["g"]

    missing = run_ingest((tmp_path / "nothing.git").as_uri(), "--name", "h", "--data-dir", str(data))
    assert_clean_failure(missing, "cannot clone")
    assert no_leftovers(data) == ["g"]


def test_archives_are_read_in_place(tmp_path):
    tgz = tmp_path / "code.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, text in {"pkg/A.java": java_class("A"), "pkg/B.java": java_class("B")}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tf.addfile(info, io.BytesIO(text.encode()))
    zipped = make_zip(tmp_path / "more.zip", {"C.java": java_class("C"), "node_modules/D.java": java_class("D")})
    result = run_ingest(str(tgz), str(zipped), "--name", "arc", "--data-dir", str(tmp_path / "data"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_kept"] == 3 and report["files_skipped"] == {"excluded-folder": 1}


# ------------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    assert_clean_failure(
        run_ingest(str(tmp_path / "nope"), "--name", "x", "--data-dir", str(tmp_path / "d")), "source not found"
    )
    assert no_leftovers(tmp_path / "d") == []


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(
        run_ingest(str(tmp_path / "empty"), "--name", "x", "--data-dir", str(tmp_path / "d")),
        "nothing to ingest",
        "no files",
    )
    assert no_leftovers(tmp_path / "d") == []


def test_no_matching_files(tmp_path):
    write(tmp_path / "src" / "A.java", java_class("A"))
    message = assert_clean_failure(
        run_ingest(str(tmp_path / "src"), "--name", "x", "--ext", "py", "--data-dir", str(tmp_path / "d")),
        "extension: 1",
    )
    assert "--ext" in message
    assert no_leftovers(tmp_path / "d") == []


def test_comma_separated_extensions_keep_each_kind(tmp_path):
    write(tmp_path / "src" / "A.java", java_class("A"))
    write(tmp_path / "src" / "b.py", "def b():\n    return 1\n")
    write(tmp_path / "src" / "c.txt", "notes\n")
    result = run_ingest(
        str(tmp_path / "src"), "--name", "x", "--ext", "py, .JAVA", "--data-dir", str(tmp_path / "d"), "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_kept"] == 2 and report["files_skipped"] == {"extension": 1}


def test_only_binary_files(tmp_path):
    write(tmp_path / "src" / "a.c", b"\x7fELF\x00\x00\x01")
    write(tmp_path / "src" / "b.c", b"int x;\x00")
    assert_clean_failure(
        run_ingest(str(tmp_path / "src"), "--name", "x", "--data-dir", str(tmp_path / "d")), "binary: 2"
    )
    assert no_leftovers(tmp_path / "d") == []


def test_file_that_is_not_utf8(tmp_path):
    # Latin-1 throughout: far over the 1% of invalid bytes a kept file may carry.
    bad = write(tmp_path / "Latin.java", "// d\u00e9j\u00e0 vu, \u00e7a \u00e9t\u00e9\nclass L {}\n".encode("latin-1"))
    assert_clean_failure(run_ingest(str(bad), "--name", "x", "--data-dir", str(tmp_path / "d")), "not-utf8: 1")
    assert no_leftovers(tmp_path / "d") == []


def test_zero_byte_file(tmp_path):
    empty = write(tmp_path / "Empty.java", b"")
    assert_clean_failure(run_ingest(str(empty), "--name", "x", "--data-dir", str(tmp_path / "d")), "empty: 1")
    assert no_leftovers(tmp_path / "d") == []


def test_archive_with_escaping_member_paths(tmp_path):
    outside = tmp_path / "evil.py"
    tar_path = tmp_path / "bad.tar"
    with tarfile.open(tar_path, "w") as tf:
        for name in ("../evil.py", str(tmp_path / "abs.py"), "ok/../../evil.py"):
            info = tarfile.TarInfo(name)
            info.size = 6
            tf.addfile(info, io.BytesIO(b"x = 1\n"))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_failure(run_ingest(str(tar_path), "--name", "x", "--data-dir", str(tmp_path / "d")), "unsafe-path: 3")
    assert not outside.exists() and not (tmp_path / "abs.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "d"])
    assert no_leftovers(tmp_path / "d") == []

    # Beside good members, the unsafe ones are only skipped and counted.
    zipped = make_zip(tmp_path / "mixed.zip", {"../evil.py": "x = 1\n", "good.py": PYTHON_SNIPPET})
    result = run_ingest(str(zipped), "--name", "m", "--data-dir", str(tmp_path / "d"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_skipped"] == {"unsafe-path": 1}
    assert not outside.exists()


def test_corrupt_archive(tmp_path):
    zipped = write(tmp_path / "broken.zip", b"PK\x03\x04 this is not really a zip file")
    assert_clean_failure(
        run_ingest(str(zipped), "--name", "x", "--data-dir", str(tmp_path / "d")), "corrupt or unreadable archive"
    )
    good = make_zip(tmp_path / "good.tar.gz", {})  # a zip wearing a .tar.gz name
    assert_clean_failure(run_ingest(str(good), "--name", "x", "--data-dir", str(tmp_path / "d")), "corrupt")
    assert no_leftovers(tmp_path / "d") == []


def test_symlink_loop(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    assert_clean_failure(run_ingest(str(loop), "--name", "x", "--data-dir", str(tmp_path / "d")), "symlink loop")
    # A folder holding nothing but a loop: the walk does not follow it and finds nothing to ingest.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "back").symlink_to(tmp_path / "src")
    assert_clean_failure(
        run_ingest(str(tmp_path / "src"), "--name", "x", "--data-dir", str(tmp_path / "d")), "symlinked-folder: 1"
    )
    assert no_leftovers(tmp_path / "d") == []


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "a\\b", "", ".hidden"])
def test_name_with_a_path_separator(tmp_path, name):
    write(tmp_path / "src" / "a.py", PYTHON_SNIPPET)
    assert_clean_failure(run_ingest(str(tmp_path / "src"), "--name", name, "--data-dir", str(tmp_path / "d")), "name")
    assert no_leftovers(tmp_path / "d") == [] and not (tmp_path / "x").exists()


def test_a_source_without_a_name(tmp_path):
    write(tmp_path / "src" / "a.py", PYTHON_SNIPPET)
    assert_clean_failure(run_ingest(str(tmp_path / "src"), "--data-dir", str(tmp_path / "d")), "--name")
    assert no_leftovers(tmp_path / "d") == []


def test_existing_dataset_needs_force(tmp_path):
    write(tmp_path / "src" / "a.py", PYTHON_SNIPPET)
    data = tmp_path / "d"
    args = [str(tmp_path / "src"), "--name", "x", "--data-dir", str(data), "--json"]
    assert run_ingest(*args).exit_code == 0
    before = snapshot(data / "x")
    write(tmp_path / "src" / "b.py", PYTHON_SNIPPET.replace("greet", "wave"))
    assert_clean_failure(run_ingest(*args), "already exists", "--force")
    assert snapshot(data / "x") == before
    replaced = run_ingest(*args, "--force")
    assert replaced.exit_code == 0 and json.loads(replaced.stdout)["files_kept"] == 2
    assert no_leftovers(data) == ["x"]
    # --force never deletes a folder that is not a dataset.
    write(data / "notes" / "mine.txt", "keep me")
    assert_clean_failure(
        run_ingest(str(tmp_path / "src"), "--name", "notes", "--data-dir", str(data), "--force"),
        "not a charlstm dataset",
    )
    assert (data / "notes" / "mine.txt").read_text() == "keep me"


def test_ctrl_c_during_ingest_leaves_nothing_and_keeps_the_old_dataset(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"m{i}.py", PYTHON_SNIPPET.replace("greet", f"greet{i}"))
    data = tmp_path / "d"
    real_read = sources_module._read_file
    calls = []

    def interrupted_read(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(sources_module, "_read_file", interrupted_read)
    result = run_ingest(str(src), "--name", "x", "--data-dir", str(data))
    assert result.exit_code == 130 and isinstance(result.exception, SystemExit)
    assert "interrupted" in result.stderr and "Traceback" not in result.output
    assert no_leftovers(data) == []

    monkeypatch.setattr(sources_module, "_read_file", real_read)
    assert run_ingest(str(src), "--name", "x", "--data-dir", str(data)).exit_code == 0
    before = snapshot(data / "x")
    calls.clear()
    monkeypatch.setattr(sources_module, "_read_file", interrupted_read)
    result = run_ingest(str(src), "--name", "x", "--data-dir", str(data), "--force")
    assert result.exit_code == 130
    assert no_leftovers(data) == ["x"] and snapshot(data / "x") == before
    load_dataset(data / "x")


@pytest.mark.parametrize(
    "option",
    [
        ["--val-fraction", "0"],
        ["--val-fraction", "1.5"],
        ["--min-char-count", "0"],
        ["--max-file-bytes", "0"],
        ["--ext", "."],
    ],
)
def test_nonsense_options(tmp_path, option):
    write(tmp_path / "src" / "a.py", PYTHON_SNIPPET)
    assert_clean_failure(run_ingest(str(tmp_path / "src"), "--name", "x", "--data-dir", str(tmp_path / "d"), *option))
    assert no_leftovers(tmp_path / "d") == []


def test_library_errors_are_domain_errors(tmp_path):
    with pytest.raises(CharlstmError, match="source not found"):
        ingest([str(tmp_path / "nope")], "x", data_dir=tmp_path / "d")


def test_single_file_source_and_uint16_vocabulary(tmp_path):
    # 300 distinct characters do not fit uint8 ids; one file gives an empty validation split and a warning.
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "\n"
    f = write(tmp_path / "wide.txt", text)
    report = ingest([str(f)], "wide", data_dir=tmp_path / "d")
    ds = load_dataset(tmp_path / "d" / "wide")
    assert ds.meta["dtype"] == "uint16" and ds.tokens("train").dtype == np.uint16
    assert ds.vocab.decode(ds.tokens("train")) == DOC_SEP + text
    assert report["val_chars"] == 0 and report["warnings"]
