from django.contrib import admin
from django.urls import path

from guestbook import views

urlpatterns = [
    path("", views.index, name="index"),
    path("sign", views.sign, name="sign"),
    path("_pool", views.pool_stats, name="pool_stats"),
    path("admin/", admin.site.urls),
]
