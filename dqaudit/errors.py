"""Errors that dqaudit raises for problems a user can fix."""


class DqauditError(Exception):
    """A problem with the user's input or environment, with a one-line message naming the fix.

    The CLI turns it into exit code 2 and the FiftyOne plugin into an App message.
    """


class InputError(DqauditError):
    """The dataset, manifest or an option does not describe a usable labeled image dataset."""
