"""Which part of umi_edge's model load crashes under a CUDA build: each variant in its own process."""
import os
import subprocess
import sys

RAW = """
import llama_cpp.llama_cpp as L
{pre}
L.llama_backend_init()
mp = L.llama_model_default_params()
mp.n_gpu_layers = {ngl}
mp.load_mode = L.LLAMA_LOAD_MODE_MMAP
{post}
ptr = L.llama_model_load_from_file(b'/tmp/m.gguf', mp)
print('loaded', bool(ptr), flush=True)
"""
VARIANTS = {
    "numpy first, raw ngl0": RAW.format(pre="", ngl=0, post="").replace("import llama_cpp.llama_cpp as L", "import numpy\nimport llama_cpp.llama_cpp as L"),
    "numpy first, raw ngl-1": RAW.format(pre="", ngl=-1, post="").replace("import llama_cpp.llama_cpp as L", "import numpy\nimport llama_cpp.llama_cpp as L"),
    "llama_cpp first, umi load": "import llama_cpp\nfrom umi_edge.engine.llama import LlamaBackend as B\nb = B()\nb.load_model('/tmp/m.gguf')\nprint('loaded')",
    "llama_cpp first, umi ngl-1": "import llama_cpp\nfrom umi_edge.engine.llama import LlamaBackend as B\nb = B()\nb.load_model('/tmp/m.gguf', n_gpu_layers=-1)\nprint('loaded')",
    "umi load ngl0": "from umi_edge.engine.llama import LlamaBackend as B\nb = B()\nb.load_model('/tmp/m.gguf')\nprint('loaded')",
    "umi, extra bufts on": "import os\nos.environ['UMI_EDGE_EXTRA_BUFTS']='1'\nfrom umi_edge.engine.llama import LlamaBackend as B\nb = B()\nb.load_model('/tmp/m.gguf')\nprint('loaded')",
}
for name, code in VARIANTS.items():
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=120)
    tail = [l for l in (r.stdout + r.stderr).splitlines() if "loaded" in l or "Error" in l or "error" in l][-3:]
    print(f"{name:28s} rc={r.returncode} {' | '.join(tail)}", flush=True)
