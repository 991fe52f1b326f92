"""hf: models are checked against models.toml's sha256 on every use, and a pull that converts to a different
file never moves it into the cache (snapshot_download replaced by a local tiny checkpoint; real converter)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from umi_edge import fetch
from umi_edge.cli import cli
from umi_edge.errors import FetchError
from umi_edge.registry import load_registry


def models_toml(tmp_path: Path, sha: str | None) -> Path:
    p = tmp_path / "models.toml"
    p.write_text(textwrap.dedent(f"""
        [models.tiny]
        source = "hf:someone/tiny-llama"
        outtype = "f16"
        {f'sha256 = "{sha}"' if sha else ""}
        [sets.tiny]
        model = "tiny"
        n_ctx = 128
        max_tokens = 16
    """))
    return p


@pytest.fixture
def hub(tiny_model, monkeypatch):
    """snapshot_download answers with a tiny local checkpoint; returns the list of calls."""
    import huggingface_hub

    ckpt = tiny_model("LlamaForCausalLM", name="tiny-llama")
    calls = []

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kw):
        calls.append(repo_id)
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def pull(models: Path, *extra: str):
    return CliRunner().invoke(cli, ["pull", "tiny", "--models", str(models), *extra])


def test_cached_hf_model_is_verified_on_every_use(tmp_path, umi_home):
    """Before: an hf: model in the cache was used without its sha256 check."""
    good = b"GGUF pretend model"
    import hashlib

    spec = load_registry(models_toml(tmp_path, hashlib.sha256(good).hexdigest())).model("tiny")
    target = fetch.cache_path(spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(good)
    assert fetch.model_path(spec) == target
    target.write_bytes(b"GGUF tampered model")
    with pytest.raises(FetchError, match=r"checksum mismatch for model 'tiny'.*--force"):
        fetch.model_path(spec, set_name="tiny")
    r = CliRunner().invoke(cli, ["run", "--models", str(tmp_path / "models.toml"), "--set", "tiny", "hi"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "checksum mismatch" in r.output, r.output


def test_pull_checks_the_conversion_before_moving_it_into_place(tmp_path, umi_home, hub):
    """Before: the conversion replaced the cached file first and was checked after."""
    # the true checksum of the conversion, from a pull without one
    r = pull(models_toml(tmp_path, None), "--json")
    assert r.exit_code == 0, r.output
    target = Path(json.loads(r.stdout)["models"][0]["path"])
    true_sha = fetch.sha256_file(target)
    target.write_bytes(b"GGUF the user's previous file")

    r = pull(models_toml(tmp_path, "0" * 64), "--force")
    last = r.stderr.strip().splitlines()[-1]     # after the progress lines: one error line
    assert r.exit_code == 1 and last.startswith("Error: checksum mismatch for model 'tiny'") and true_sha in last
    assert target.read_bytes() == b"GGUF the user's previous file"       # not replaced
    assert [p.name for p in target.parent.iterdir() if ".part" in p.name] == []

    models = models_toml(tmp_path, true_sha)
    r = pull(models)    # cached, but the cached file does not match: refused, not used
    assert r.exit_code == 1 and "checksum mismatch" in r.output and "--force" in r.output, r.output
    r = pull(models, "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["models"][0]["status"] == "converted", r.output
    assert fetch.sha256_file(target) == true_sha
    r = pull(models, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["models"][0]["status"] == "cached"
    assert fetch.model_path(load_registry(models).model("tiny")) == target
    # another outtype is another file: models.toml's checksum is not applied to it
    r = pull(models, "--outtype", "q8_0", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["models"][0]["status"] == "converted", r.output
