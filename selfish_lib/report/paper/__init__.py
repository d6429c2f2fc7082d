"""The paper: one document (``paper.html``, offline and single-file, and ``paper.pdf``)
built from the executed chapters of ``reports/<profile>/`` and ``claims.json``, and its
published copy in ``paper/``.

- ``build``: the page, the PDF (Chromium), the manifest, publishing and its check;
- ``chapters``: one executed notebook as a chapter (numbered figures and tables with
  their provenance, folded code, parameters without the build machine's paths);
- ``findings``: the claims at a glance and the sentences their verdicts choose;
- ``references``: the BibTeX bibliography and the citations;
- ``prose``: the rule that no result is typed by hand in prose.
"""

from .build import (
    PaperBuild,
    PaperError,
    build_paper,
    check_publishable,
    publish_paper,
    published_problems,
)

__all__ = [
    "PaperBuild",
    "PaperError",
    "build_paper",
    "check_publishable",
    "publish_paper",
    "published_problems",
]
