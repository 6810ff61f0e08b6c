"""The guestbook's tests, run by Django's own runner (``python manage.py test``): the test
databases are created and dropped through wsgipool's backends, and used through them."""

from django.conf import settings
from django.db import connections, transaction
from django.test import TestCase

from .models import Entry

# The example has one database; the project's test settings add one per server.
ALIASES = sorted({"default", "pg", "my", "lite"} & set(settings.DATABASES))


class GuestbookTests(TestCase):
    databases = set(ALIASES)

    def test_each_database_is_a_pooled_test_database(self):
        for alias in ALIASES:
            with self.subTest(alias=alias):
                conn = connections[alias]
                Entry.objects.using(alias).create(name="test", message=alias)
                self.assertEqual(Entry.objects.using(alias).filter(message=alias).count(), 1)
                self.assertTrue(type(conn).__module__.startswith("wsgipool.django."))
                self.assertIsNotNone(conn._pool_entry)  # checked out of the pool
                self.assertIn("test", conn.settings_dict["NAME"])

    def test_atomic_rolls_back(self):
        for alias in ALIASES:
            with self.subTest(alias=alias):
                with self.assertRaises(ZeroDivisionError):
                    with transaction.atomic(using=alias):
                        Entry.objects.using(alias).create(name="gone", message="x")
                        1 / 0
                self.assertFalse(Entry.objects.using(alias).filter(name="gone").exists())

    def test_index_page(self):
        Entry.objects.create(name="Ada", message="hello")
        response = self.client.get("/")
        self.assertContains(response, "Ada")
