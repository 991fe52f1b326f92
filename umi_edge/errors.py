"""The exception tree. Library code raises these; only the CLI (umi_edge/cli/) turns them into messages and exit codes."""


class UmiError(Exception):
    """Base class: a fault of the input or environment, reported to the user in one line."""


class ConfigError(UmiError):
    """models.toml, a flag or an environment value is wrong (unknown set/role/key, bad type)."""


class ModelError(UmiError):
    """A model or adapter file is missing, is not a GGUF model, or llama.cpp refused it."""


class EngineError(UmiError):
    """An inference server failed a request: unreachable, timed out, an HTTP error or a malformed answer.
    The message names the role and the server."""


class FetchError(UmiError):
    """Downloading or verifying a model failed."""


class ToolError(UmiError):
    """A tool definition or tool module is invalid (not a fault of the model)."""


class ConvertError(UmiError):
    """A checkpoint cannot be converted: names the file, tensor or key and what to do."""


class Cancelled(UmiError):
    """The run was cancelled from another thread."""
