"""(owned by the issue that builds this command)"""


def add_arguments(parser):
    pass


def run(args):
    from ..errors import UserError

    raise UserError("this command is not built yet")
