"""Test suite for debug-access (unit tests, emulators and integration fixtures)."""
