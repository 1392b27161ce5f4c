"""The errors of loading and checking artifacts (their own module: trust, identity and the
manifest raise them and none of them imports another for it)."""


class ArtifactError(Exception):
    """An artifact is missing, malformed or does not match its manifest."""


class ArtifactFinding(ArtifactError):
    """The artifact is there but a check of it fails on load: a gate finding (FAIL, the check named
    `check`), not a failure to produce evidence (ERROR). Under a run the case's other checks skip,
    naming it."""

    check = ""


class ArtifactIdentityError(ArtifactFinding):
    """The artifact loads but is not the model's: built from other weights, for another model, or
    its payload's inputs, layers or weights are another model's."""

    check = "artifact_identity"


class InvalidGraphError(ArtifactFinding):
    """The payload's ONNX graph is not valid (a Q/DQ axis its tensor does not have, an ONNX checker
    error): whatever a runtime computes from it, with its optimizer hiding the invalid node or not,
    is not evidence."""

    check = "graph_valid"
