"""Two test classes, so ``manage.py test --parallel 2`` clones the test database; a
TransactionTestCase with ``serialized_rollback``, so the runner serializes the database
and loads it back between tests, all through wsgipool's backend."""

from django.test import TestCase, TransactionTestCase

from guestbook.models import Entry


class InATransaction(TestCase):
    def test_write_rolled_back_after(self):
        Entry.objects.create(name="a", message="x")
        self.assertEqual(Entry.objects.count(), 1)


class Flushed(TransactionTestCase):
    serialized_rollback = True

    def test_write(self):
        Entry.objects.create(name="b", message="x")
        self.assertEqual(Entry.objects.count(), 1)

    def test_after_the_flush(self):
        self.assertEqual(Entry.objects.count(), 0)
