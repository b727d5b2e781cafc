"""Evidence: what ztauthz knows about a request beyond the token, from trustworthy sources only.

One module a job: ``client_ip`` (the client address behind trusted proxies), ``networks`` (named
CIDR sets), ``geoip`` (country from a MaxMind database), ``xfcc`` (Envoy's
``x-forwarded-client-cert``), ``workload`` (SPIFFE identities), ``device`` (the three device
sources), ``model`` (the values they produce) and ``gather`` (the step the pipeline runs).
"""
