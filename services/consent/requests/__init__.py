"""GDPR data-subject requests (Art. 12(3), 15-21): access, erasure, rectification and objection.

Each request is recorded with its deadline, walks the lifecycle received, verified, in progress,
completed or rejected, and keeps every step in its history. Overdue requests are computed on read.
"""
