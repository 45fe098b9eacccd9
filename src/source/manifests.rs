//! Standalone source: a directory of Kubernetes YAML, watched.
