"""The names the whole loop shares for who serves: MLflow aliases and serving routes.

``champion`` answers the traffic; ``challenger`` is a candidate under test, as a canary (a sticky
share of the traffic) or in shadow (scored beside the champion, never answering). The same words
are the registry's aliases, the serving routes in the inference log and the ledger's alias column.
"""

from __future__ import annotations

CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"
#: The registry aliases the loop manages (stages are never used).
ALIASES = (CHAMPION, CHALLENGER)
#: How a challenger is released next to the champion.
CANARY = "canary"
MODES = (CANARY, SHADOW)
