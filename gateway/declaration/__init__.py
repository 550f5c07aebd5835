"""Arrival declarations (来鲁申报): the form, the places, the decision (docs/api.md,
"DeclarationService")."""

from gateway.declaration.form import DeclarationForm, Declared, check
from gateway.declaration.service import DEFAULT_VALIDITY, Declarations

__all__ = ["DEFAULT_VALIDITY", "DeclarationForm", "Declarations", "Declared", "check"]
