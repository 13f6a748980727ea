"""University-1652 street views → satellite (the ground → satellite task of University-1652 and UAVM'25).

The same ``University-Release`` folder as :mod:`skyrank.benchmarks.university1652`, read through its street views
(``layumi/University1652-Baseline`` ``test.py`` with ``query_name='query_street'``,
``gallery_name='gallery_satellite'``):

- test: the 2,579 narrow-FOV street photos of ``test/query_street`` (701 IDs), each a query on its own, against
  all 951 ``test/gallery_satellite`` tiles (the 250 distractor IDs included); exactly one positive (same ID);
- train: ``train/street`` against ``train/satellite`` (``train/google``, the noisy Google Image results, is not
  read: it has no test counterpart, and several class folders are empty).

Views are stored as ``ground``. Only ``d2s`` (street query → satellite gallery) is read.
"""

from __future__ import annotations

from skyrank.benchmarks._base import register_benchmark
from skyrank.benchmarks.university1652 import University1652


@register_benchmark("university1652_street")
class University1652Street(University1652):
    """University-1652 street → satellite; ``root`` is the ``University-Release`` folder."""

    display_name = "University-1652 (street)"
    evaluation_protocol = "university1652-street"
    directions = ("d2s",)
    writes_optional_columns = True
    writes_optional_columns = True
    card_notes = (
        "University-1652 street views → satellite (`d2s`), the ground → satellite task of University-1652 and "
        "UAVM'25: the 2,579 narrow-FOV street photos of `test/query_street`, each a query on its own, against all 951 "
        "`test/gallery_satellite` tiles (250 distractor IDs included); exactly one positive (same ID). "
        "`semi_positive_ids` is empty and `latitude`/`longitude` are null."
    )
    folders = {
        ("test", "d2s"): (("test/query_street", "ground"), ("test/gallery_satellite", "satellite")),
        ("train", "d2s"): (("train/street", "ground"), ("train/satellite", "satellite")),
    }
