"""Pipeline definitions (YAML) shipped with atmospec, installed as ``atmospec.pipelines``."""
