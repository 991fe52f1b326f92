"""Write a models.toml overlay with the default set in each KV layout, and with q8_0 role adapters, for
`umi-edge eval tasks --compare` and `umi-edge bench --models` (docs/scale.md):

    python scripts/layout_sets.py OUT_DIR
    umi-edge eval tasks demo --models OUT_DIR/models.toml --set default-contexts \
        --compare default-pool --compare default-pool-q8 --json > report.json

default-contexts is the bundled default set; default-pool the same with kv_layout = "pool"; default-pool-q8 also
loads every adapter with its lora_a matrices in q8_0 (OUT_DIR/*.q8_0.gguf). lora_b keeps F16: its rows are
rank-long (16), and q8_0 needs rows of whole 32-value blocks.
"""
from __future__ import annotations

import sys
from pathlib import Path


def requantize(src: Path, dst: Path) -> tuple[int, int]:
    """Copy adapter GGUF `src` to `dst` with every 2-D tensor whose rows are whole q8_0 blocks in q8_0; returns
    (tensors quantized, tensors kept)."""
    import gguf
    import numpy as np

    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = field.types[1] if len(field.types) > 1 else None
        w.add_key_value(key, field.contents(), field.types[0], sub)
    quantized = kept = 0
    Q = gguf.GGMLQuantizationType
    for t in r.tensors:
        data = np.asarray(t.data)
        shape = tuple(int(x) for x in reversed(t.shape))      # numpy order: rows last
        if t.tensor_type in (Q.F16, Q.F32) and len(shape) == 2 and shape[-1] % 32 == 0:
            q = gguf.quants.quantize(data.astype(np.float32).reshape(shape), Q.Q8_0)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
            quantized += 1
        else:
            w.add_tensor(t.name, data.reshape(shape), raw_dtype=t.tensor_type)
            kept += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return quantized, kept


def main(out: str) -> None:
    from importlib import resources

    from umi_edge.registry import load_registry, resolve_set

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = resolve_set("default", registry=load_registry())
    shipped = Path(str(resources.files("umi_edge").joinpath("adapters")))
    q8 = {}
    for name in ("planner", "caller", "summarizer", "trunk"):
        q8[name] = out_dir / f"{name}.q8_0.gguf"
        n_q, n_kept = requantize(shipped / f"{name}.gguf", q8[name])
        print(f"{q8[name]}: {n_q} tensors q8_0, {n_kept} kept", file=sys.stderr)

    def role(r, adapters, extra=""):
        rs = spec.roles[r]
        trunk = f', trunk_adapter = "{adapters["trunk"]}"' if rs.trunk_adapter else ""
        share = f', share_context = "{rs.share_context}"' if rs.share_context else ""
        return f'{r} = {{ adapter = "{adapters[r]}", max_tokens = {rs.max_tokens}{trunk}{share}{extra} }}'

    f16 = {n: shipped / f"{n}.gguf" for n in q8}
    head = ('model = "smollm2-135m-instruct"\nprotocol = "alpha-umi/toolbench-v1"\n'
            'tools = "umi_edge.tools.demo:TOOLS"\n'
            f"n_ctx = {spec.roles['planner'].n_ctx}\nmax_steps = {spec.max_steps}\ntool_top_k = {spec.tool_top_k}\n"
            'sampling = { temperature = 0.0, top_p = 1.0, top_k = 0, min_p = 0.0, seed = 0 }\n')
    text = ""
    for name, layout, adapters in (("default-contexts", "contexts", f16), ("default-pool", "pool", f16),
                                   ("default-pool-q8", "pool", q8)):
        text += f"[sets.{name}]\n{head}kv_layout = \"{layout}\"\n"
        text += "\n".join(role(r, adapters) for r in ("planner", "caller", "summarizer")) + "\n\n"
    (out_dir / "models.toml").write_text(text)
    print(out_dir / "models.toml")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/layout_sets.py OUT_DIR")
    main(sys.argv[1])
