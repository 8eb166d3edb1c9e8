"""The `ferry` commands, one module each: ``register(subparsers)`` adds the command's parser, ``run(args)`` does it.

A command parses, calls the library and prints what the library returned; it keeps no logic of the library's.
Options the library has a default for default to None here, so that the library's default applies (help texts
read it from the library). A command raises the library's errors as they come: :func:`ferry.cli.main` says them in
one line, with the flag of the argument an error names, and exits with the error's ``exit_status``.

Modules import only the standard library and light ``ferry`` modules at the top: `ferry --help` builds every
parser, and must not pay for torch, onnxruntime or boto3.
"""
