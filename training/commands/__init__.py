"""One module per ``cyclegan`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""
