from atomicplug.cli import run

run()
