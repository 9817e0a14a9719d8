"""Product image sync: plain Python shared by the Functions triggers, the CLI, the tests and the benchmark.

Never imports ``azure.functions``; reads settings only through ``Settings.from_env``.
"""
