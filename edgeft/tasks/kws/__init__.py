"""Keyword spotting: log-mel features, clip top-1, and a streaming detector on the device."""
