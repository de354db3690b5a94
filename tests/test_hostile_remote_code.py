"""Adversarial suite: model folders that try to run their own Python.

Expected outcome of every case: a clear error (``ModelFileError`` naming the folder and the offending
file, CLI exit status 2, one line, no traceback) before transformers is called, so no "Do you wish to
run the custom code? [y/N]" prompt is ever shown and the planted code never runs, even with ``y`` on
standard input. The clean demo folder keeps loading (documented handling).
"""

from __future__ import annotations

import io
import json
import sys

import pytest

from avatar_cascade.core.errors import ModelFileError
from tests.helpers import node_class
from tests.hostile_helpers import (
    copy_mllm,
    models_tree,
    one_line_error,
    plant_code_folder,
    run_args,
    run_cli,
)


@pytest.fixture()
def tree(demo_models_dir, tmp_path):
    return models_tree(demo_models_dir, tmp_path / "models")


def test_cli_refuses_a_folder_with_auto_map_and_code_even_with_y_on_stdin(demo_models_dir, tree, tmp_path):
    """Planted code, CLI: exit 2, one line naming the folder and processor_config.json, no marker, no prompt."""
    plant_code_folder(demo_models_dir, tree)
    marker = tmp_path / "MARKER"
    out = tmp_path / "out" / "o.mp4"
    res = run_cli(
        *run_args(tree, out, mllm="evil"), cwd=tmp_path, stdin="y\ny\ny\n", env={"AVATAR_TEST_MARKER": str(marker)}
    )
    assert res.returncode == 2, res.stderr
    line = one_line_error(res.stderr)
    assert "--mllm" in line and "evil" in line and "Fix:" in line, line
    assert "evil_processor.py" in line or "processor_config.json" in line, line
    assert "Do you wish to run" not in res.stdout + res.stderr  # transformers' prompt never appeared
    assert not marker.exists()
    assert not out.exists()
    assert not (tmp_path / "out" / "o_work" / "timeline.json").exists()  # refused before any work


def test_the_mllm_loader_node_refuses_the_planted_folder(demo_models_dir, tree, tmp_path, monkeypatch):
    """Planted code, node: ModelFileError naming the folder and the file; no marker, stdin answers y."""
    plant_code_folder(demo_models_dir, tree)
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("AVATAR_TEST_MARKER", str(marker))
    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(tree))
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))
    with pytest.raises(ModelFileError) as err:
        node_class("AvatarCascadeMLLMLoader")().load("evil")
    msg = str(err.value)
    assert "mllm_name" in msg and "evil" in msg and "Fix:" in msg
    assert "evil_processor.py" in msg  # the code file is named (checked before the json)
    assert not marker.exists()
    assert not any(m.startswith("transformers_modules") for m in sys.modules)


@pytest.mark.parametrize(
    "config", ["config.json", "tokenizer_config.json", "processor_config.json", "generation_config.json"]
)
def test_auto_map_in_any_json_config_is_refused_without_a_code_file(demo_models_dir, tree, config):
    """auto_map anywhere (even pointing at the hub, no .py beside it): refused, naming the json file."""
    from avatar_cascade.models.mllm import load_mllm

    folder = copy_mllm(demo_models_dir, tree, "mapped")
    doc = json.loads((folder / config).read_text())
    doc["auto_map"] = {"AutoProcessor": "someone/else--code.Processor"}
    (folder / config).write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match=config.replace(".", r"\.")) as err:
        load_mllm(folder, input_name="mllm_name")
    assert "auto_map" in str(err.value)


def test_a_py_file_alone_is_refused(demo_models_dir, tree):
    """A *.py (or compiled) file in a weights folder: refused, naming it (nothing references it yet)."""
    from avatar_cascade.models.mllm import load_mllm

    folder = copy_mllm(demo_models_dir, tree, "stray")
    (folder / "sub").mkdir()
    (folder / "sub" / "helper.pyc").write_bytes(b"\0")
    with pytest.raises(ModelFileError, match=r"sub/helper\.pyc"):
        load_mllm(folder, input_name="mllm_name")


def test_a_class_name_transformers_does_not_have_is_refused(demo_models_dir, tree):
    """A non-standard tokenizer class: refused before transformers could look it up anywhere else."""
    from avatar_cascade.models.mllm import load_mllm

    folder = copy_mllm(demo_models_dir, tree, "odd")
    doc = json.loads((folder / "tokenizer_config.json").read_text())
    doc["tokenizer_class"] = "MyFancyTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="MyFancyTokenizer"):
        load_mllm(folder, input_name="mllm_name")


def test_every_transformers_load_passes_trust_remote_code_false(demo_models_dir, monkeypatch):
    """Defence in depth: every from_pretrained call the loaders make says trust_remote_code=False and
    local_files_only=True (checked on the real calls of the MLLM loader)."""
    import transformers

    from avatar_cascade.demo.models import MLLM_FOLDER
    from avatar_cascade.models.mllm import load_mllm

    seen = []
    real = transformers.AutoProcessor.from_pretrained.__func__
    cls = transformers.Qwen2_5_VLForConditionalGeneration
    real_model = cls.from_pretrained.__func__

    def spy(real_fn):
        def call(klass, *args, **kwargs):
            seen.append(kwargs)
            return real_fn(klass, *args, **kwargs)

        return classmethod(call)

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", spy(real))
    monkeypatch.setattr(cls, "from_pretrained", spy(real_model))
    load_mllm(demo_models_dir / "LLM" / MLLM_FOLDER)
    assert len(seen) == 2
    assert all(kw.get("trust_remote_code") is False and kw.get("local_files_only") is True for kw in seen)


def test_the_source_has_no_from_pretrained_without_trust_remote_code_false():
    """Static check over the engine: each ``from_pretrained(`` call site passes ``**SAFE_LOAD`` (which holds
    trust_remote_code=False), so a new loader cannot forget it."""
    import re

    from tests.hostile_helpers import ROOT

    offenders = []
    for path in (ROOT / "avatar_cascade").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"\.from_pretrained\(", text):
            call = text[m.end() : text.find(")", m.end()) + 1]
            built = "**kwargs" in call and "kwargs: dict = {**SAFE_LOAD" in text  # the MLLM's kwargs dict
            if "SAFE_LOAD" not in call and "trust_remote_code=False" not in call and not built:
                offenders.append(f"{path.relative_to(ROOT)}: {call[:60]}")
    assert offenders == []


def test_an_mllm_folder_without_a_chat_template_is_one_clear_error(demo_models_dir, tree):
    """No chat template: a ModelFileError at load (not a ValueError from inside transformers at the first reply)."""
    from avatar_cascade.models.mllm import load_mllm

    folder = copy_mllm(demo_models_dir, tree, "notemplate")
    (folder / "chat_template.jinja").unlink()
    for name in ("tokenizer_config.json", "processor_config.json"):
        doc = json.loads((folder / name).read_text())
        doc.pop("chat_template", None)
        (folder / name).write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="chat template") as err:
        load_mllm(folder, input_name="mllm_name")
    assert "notemplate" in str(err.value) and "Fix:" in str(err.value)


def test_the_cli_refuses_an_mllm_folder_without_a_chat_template_before_any_work(demo_models_dir, tree, tmp_path):
    folder = copy_mllm(demo_models_dir, tree, "notemplate")
    (folder / "chat_template.jinja").unlink()
    res = run_cli(
        *run_args(tree, tmp_path / "o.mp4", mllm="notemplate"), "--workdir", str(tmp_path / "w"), cwd=tmp_path
    )
    assert res.returncode == 2
    line = one_line_error(res.stderr)
    assert "--mllm" in line and "chat template" in line and "notemplate" in line
    assert not (tmp_path / "w" / "timeline.json").exists()


def test_the_clean_demo_folder_still_loads(demo_models_dir):
    """Documented handling: the demo Qwen2.5-VL folder passes every check and loads."""
    from avatar_cascade.demo.models import MLLM_FOLDER
    from avatar_cascade.models.hf_folder import check_hf_folder
    from avatar_cascade.models.mllm import load_mllm

    check_hf_folder(demo_models_dir / "LLM" / MLLM_FOLDER, "mllm_name")
    assert load_mllm(demo_models_dir / "LLM" / MLLM_FOLDER).family == "qwen2_5_vl"


@pytest.mark.parametrize("loader", ["text_encoder", "audio_encoder"])
def test_encoder_folders_with_code_are_refused_before_transformers(loader, tmp_path, monkeypatch):
    """The UMT5 and wav2vec2 folder loaders run the same check: a config with auto_map never reaches
    from_pretrained (spied: not called)."""
    import transformers

    from avatar_cascade.models.audio_encoder import load_audio_encoder
    from avatar_cascade.models.text_encoder import load_text_encoder

    folder = tmp_path / loader
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "umt5", "auto_map": {"AutoModel": "m.Model"}}))
    (folder / "spiece.model").write_bytes(b"\0")
    called = []
    for cls in (transformers.UMT5EncoderModel, transformers.Wav2Vec2Model):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda *a, **k: called.append(a)))
    load = load_text_encoder if loader == "text_encoder" else load_audio_encoder
    with pytest.raises(ModelFileError, match=r"config\.json.*auto_map"):
        load(folder, input_name=f"{loader}_name")
    assert called == []
