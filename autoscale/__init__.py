"""autoscale: an event-driven autoscaler for Kubernetes, compatible with KEDA's ScaledObjects."""

__version__ = "0.1.0.dev0"
