"""Parts several model families share: pure functions and small modules with no family in them
(masking today; text towers, fusion layers and heads as further families move here)."""
