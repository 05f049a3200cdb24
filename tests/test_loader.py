"""The loader keeps every node's position and turns every bad input into a located problem."""

from __future__ import annotations

from pathlib import Path

from reconciler.manifests.loader import MAX_FILE_BYTES, MAX_NODES_PER_FILE, load_bytes, load_file


def load(text: str | bytes, name: str = "f.yaml"):
    raw = text.encode() if isinstance(text, str) else text
    return load_bytes(raw, name)


def problem(text: str | bytes) -> tuple[int, int, str, str]:
    loaded = load(text)
    assert loaded.documents == []
    assert len(loaded.problems) == 1
    p = loaded.problems[0]
    return p.line, p.column, p.code, p.message


def test_positions_of_keys_and_values_are_one_based():
    doc = load("a: 1\nb:\n  c: [x, y]\n  d: {e: f}\n").documents[0]
    assert doc.data == {"a": 1, "b": {"c": ["x", "y"], "d": {"e": "f"}}}
    assert doc.position("/a") == (1, 4)
    assert doc.position("/b/c", at_key=True) == (3, 3)
    assert doc.position("/b/c/1") == (3, 10)
    assert doc.position("/b/d/e") == (4, 10)
    # an absent node answers with its nearest ancestor
    assert doc.position("/b/d/missing") == (4, 6)


def test_multi_document_file_yields_each_document_with_its_index():
    docs = load("a: 1\n---\nb: 2\n---\n").documents
    assert [(d.index, d.count, d.data) for d in docs] == [(0, 2, {"a": 1}), (1, 2, {"b": 2})]
    assert docs[1].position("/b") == (3, 4)


def test_json_files_load_with_positions_even_with_tab_indentation():
    doc = load('{\n\t"name": "x",\n\t"config": {\n\t\t"n": 1\n\t}\n}\n', "f.json").documents[0]
    assert doc.data == {"name": "x", "config": {"n": 1}}
    assert doc.position("/config/n") == (4, 8)


def test_duplicate_key_is_reported_at_its_second_occurrence():
    line, column, code, message = problem("name: a\ntype: api\nname: b\n")
    assert (line, column, code) == (3, 1, "duplicate-key")
    assert "first at line 1" in message


def test_yaml_syntax_error_points_at_the_problem():
    line, column, code, message = problem("name: a\nconfig:\n  endpoint: [unclosed\n  method: POST\n")
    assert code == "yaml"
    assert line == 4
    assert message.startswith("YAML syntax error")


def test_tab_indentation_gets_a_hint_about_spaces():
    loaded = load("config:\n\tendpoint: x\n")
    assert loaded.problems[0].line == 2
    assert "spaces" in loaded.problems[0].hint


def test_alias_bomb_stops_at_the_node_limit():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    line, _, code, message = problem(bomb)
    assert code == "alias-bomb"
    assert f"{MAX_NODES_PER_FILE:,}" in message
    assert line == 1  # reported inside the anchored list that the aliases expand


def test_file_over_the_size_cap_is_refused_before_parsing():
    _, _, code, message = problem(b"a: " + b"x" * MAX_FILE_BYTES + b"\n")
    assert code == "too-large"
    assert "over the limit" in message


def test_non_utf8_bytes_are_located():
    line, column, code, message = problem(b"name: ok\nother: caf\xe9\n")
    assert (line, column, code) == (2, 11, "encoding")
    assert "0xe9" in message


def test_empty_and_comment_only_files_are_problems():
    assert problem("")[2] == "empty"
    assert problem("   \n\n")[2] == "empty"
    assert problem("# just a comment\n")[2] == "empty"


def test_document_that_is_not_a_mapping():
    line, _, code, message = problem("- a\n- b\n")
    assert (line, code) == (1, "not-a-mapping")
    assert "list" in message


def test_non_string_keys_are_refused_with_a_quoting_hint():
    loaded = load("on: push\n")
    assert loaded.problems[0].code == "key-type"
    assert "quote" in loaded.problems[0].hint


def test_custom_tags_are_refused():
    assert problem("a: !Ref foo\n")[2] == "tag"
    assert problem("a: !!binary aGVsbG8=\n")[2] == "tag"


def test_timestamps_stay_strings():
    doc = load("when: 2024-01-15T10:30:00.000Z\n").documents[0]
    assert doc.data == {"when": "2024-01-15T10:30:00.000Z"}


def test_merge_keys_expand_and_explicit_keys_win():
    doc = load("base: &b {method: POST, timeout: 5s}\nconfig:\n  <<: *b\n  timeout: 10s\n").documents[0]
    assert doc.data["config"] == {"method": "POST", "timeout": "10s"}


def test_byte_order_mark_is_ignored():
    assert load("\ufeffa: 1\n").documents[0].data == {"a": 1}


def test_unreadable_path_is_a_problem_not_an_exception(tmp_path: Path):
    loaded = load_file(tmp_path / "missing.yaml")
    assert loaded.problems[0].code == "unreadable"


def test_fifo_and_device_files_are_refused_without_reading(tmp_path: Path):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name in ("pipe.yaml", "zero.yaml"):
        loaded = load_file(tmp_path / name)
        assert [p.message for p in loaded.problems] == ["not a regular file"], name


def test_huge_and_sexagesimal_numbers_are_refused_quickly():
    assert problem("n: 1" + "0" * 5000 + "\n")[2] == "number"
    assert problem("n: " + ":".join(["1"] + ["0"] * 5000) + "\n")[2] == "number"
    assert load("n: 123456789\n").documents[0].data == {"n": 123456789}


def test_self_including_merge_key_is_an_error_not_a_recursion():
    line, _, code, _ = problem("a: 1\nlabels: &a {<<: *a}\n")
    assert (line, code) == (2, "too-deep")


def test_json_surrogate_pair_escapes_load_as_the_character():
    doc = load('{\n  "name": "J\\ud83d\\ude00"\n}\n', "f.json").documents[0]
    assert doc.data == {"name": "J\U0001f600"}


def test_positions_ignore_line_breaks_editors_do_not_count():
    doc = load('a: "x\u0085y\u2028z"\nb: 1\n').documents[0]
    assert doc.position("/b") == (2, 4)


def test_a_path_named_twice_is_read_once(tmp_path: Path):
    from reconciler.manifests.loader import discover

    (tmp_path / "a.yaml").write_text("a: 1\n")
    found, _ = discover([tmp_path, tmp_path / "a.yaml", f"{tmp_path}/./a.yaml"])
    assert found == [str(tmp_path / "a.yaml")]


def test_merge_key_bomb_is_counted_like_aliases_and_refused_at_its_line():
    # 30 levels of `<<: [*prev x20]` over an empty mapping: 3.4 KB that merges 20**30 times
    # without ever building a value, so only counting the merges themselves stops it
    bomb = "l0: &l0 {}\n"
    for level in range(1, 31):
        bomb += f"l{level}: &l{level} {{<<: [" + ", ".join([f"*l{level - 1}"] * 20) + "]}\n"
    assert len(bomb) < 4096
    line, _, code, message = problem(bomb)
    assert code == "alias-bomb"
    assert f"{MAX_NODES_PER_FILE:,}" in message and "merge" in message
    assert 1 <= line <= 31


def test_symlinks_out_of_the_config_directory_are_refused_with_a_message(tmp_path: Path):
    """A link in the reviewed directory must not bring in a file nobody reviews (or show
    /etc/shadow's lines in a YAML error); a link that stays inside it is fine."""
    from reconciler.manifests.loader import discover

    config, outside = tmp_path / "integrations.d", tmp_path / "outside"
    (config / "shared").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.yaml").write_text("a: 1\n")
    (config / "shared" / "real.yaml").write_text("a: 1\n")
    (config / "inside.yaml").symlink_to(config / "shared" / "real.yaml")
    (config / "leak.yaml").symlink_to(outside / "secret.yaml")
    (config / "elsewhere").symlink_to(outside, target_is_directory=True)

    found, problems = discover([config])
    assert found == [str(config / "inside.yaml")]  # real.yaml is the same file, read once
    assert sorted((p.file, p.code) for p in problems) == [
        (str(config / "elsewhere"), "symlink-outside"),
        (str(config / "leak.yaml"), "symlink-outside"),
    ]
    [leak] = [p for p in problems if p.file.endswith("leak.yaml")]
    assert str(outside / "secret.yaml") in leak.message
    assert "copy the file into" in leak.hint
