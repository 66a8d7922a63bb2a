from tillit.migrations import run_env

run_env()
