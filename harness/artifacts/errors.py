"""The errors of loading and checking artifacts (their own module: trust, identity and the
manifest raise them and none of them imports another for it)."""


class ArtifactError(Exception):
    """An artifact is missing, malformed or does not match its manifest."""


class ArtifactIdentityError(ArtifactError):
    """The artifact loads but is not the model's: built from other weights, for another model, or
    its payload's inputs, layers or weights are another model's. A gate finding (FAIL, the
    `artifact_identity` check), not a failure to produce evidence (ERROR)."""
