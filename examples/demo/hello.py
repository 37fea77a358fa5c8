import platform

print(f"hello from Python {platform.python_version()} in the sandbox")
