"""The shopper API the preference center calls: a preference link becomes a session on ``/v1/me``.

See ``gateway/shopper/api.py`` for the endpoints and the README's "Shopper API" section for the
contract; the subject is always the shopper token's, never one named in a request.
"""
