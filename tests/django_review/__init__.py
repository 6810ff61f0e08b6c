"""Test cases run by Django's own test runner in tests/test_django_review.py (not by
pytest: no module here is named ``test_*``)."""
