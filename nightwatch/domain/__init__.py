"""The pure core of nightwatch: standard library only (a unit test checks it)."""
