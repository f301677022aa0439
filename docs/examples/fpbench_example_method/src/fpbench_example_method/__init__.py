"""An example fpbench method in its own package (docs/extending.md, "From your own package")."""

from fpbench_example_method.method import ExampleAgreement, ExampleAgreementConfig

__all__ = ["ExampleAgreement", "ExampleAgreementConfig"]
