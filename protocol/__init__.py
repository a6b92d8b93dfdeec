"""Herald's vocabulary: ids, channels, statuses, messages, wire formats, API schemas.

Pure data: nothing here does I/O or reads a clock. Anything may import protocol;
protocol imports nothing of Herald's but itself.
"""
