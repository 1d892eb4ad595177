"""pyngress: a load balancer and Kubernetes Ingress controller."""

__version__ = "0.1.0"
