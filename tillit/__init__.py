"""The internal package every tillit process shares.

Settings, the database engine and the request's transaction, Alembic on start, service tokens,
RFC 9457 problem details, logging, the release policy and the ``tillit`` command live here once,
so that the services never carry a copy of their own.
"""
