"""Pictures of person-search results."""

from __future__ import annotations

from .search_results import Match, draw_search_results, top_matches

__all__ = ["Match", "top_matches", "draw_search_results"]
