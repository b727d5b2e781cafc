"""Transports map a wire format to RequestContext and render a Decision; no authorization logic."""
