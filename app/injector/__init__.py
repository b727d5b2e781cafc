"""The sidecar injector: a mutating admission webhook that adds ztauthz and Envoy to Pods.

``mutate(review, config)`` is the whole decision, a pure function from an AdmissionReview to
the AdmissionReview answer; ``server`` only carries it over TLS.
"""
