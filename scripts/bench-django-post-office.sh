#!/usr/bin/env bash
# django-post-office as a reference for scripts/bench.sh: mails/s from its queue into an SMTP
# server on 127.0.0.1, in its default configuration (send_queued_mail, batches of 100, 5 threads
# a process, each thread keeping one SMTP connection per batch, a log row per mail).
#
# A venv (${MG_BENCH_VENV:-/tmp/mg-bench-venv}, reused when it holds the pinned versions) gets
# Django and django-post-office from PyPI; a temporary project uses SQLite in a file. N mails
# (one recipient each, a text body of SIZE bytes as lines of 64 characters, priority medium) are
# queued with post_office.mail.send_many(), not timed; then `python -m django send_queued_mail
# --processes P` (what `manage.py send_queued_mail` runs: it loops batch by batch until the queue
# is empty) is timed from start to exit, and every mail must be `sent`.
#
# Usage: scripts/bench-django-post-office.sh PORT [MAILS=2000] [SIZE=5120] [PROCESSES=1]
# Prints mails/s (one number) on stdout, progress on stderr. Exits 3 if the venv cannot be
# made (no network to PyPI, no venv module), other non-zero codes on other failures.
set -euo pipefail

PORT=${1:?usage: $0 PORT [MAILS] [SIZE] [PROCESSES]}
MAILS=${2:-2000}
SIZE=${3:-5120}
PROCESSES=${4:-1}
DJANGO_VERSION=4.2.30
POST_OFFICE_VERSION=3.12.0
VENV=${MG_BENCH_VENV:-/tmp/mg-bench-venv}
exec 3>&1 1>&2

versions() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("Django"), m.version("django-post-office"))' 2>/dev/null
}
if [ "$(versions || true)" != "$DJANGO_VERSION $POST_OFFICE_VERSION" ]; then
  echo "installing Django $DJANGO_VERSION and django-post-office $POST_OFFICE_VERSION into $VENV …"
  if ! { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } ||
     ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --timeout 20 --retries 2 \
         "Django==$DJANGO_VERSION" "django-post-office==$POST_OFFICE_VERSION"; then
    echo "could not install Django $DJANGO_VERSION and django-post-office $POST_OFFICE_VERSION into $VENV (pip needs PyPI; python3 needs its venv module)" >&2
    exit 3
  fi
fi
PY=$VENV/bin/python

WORK=$(mktemp -d /tmp/mgbench-dpo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/bench_settings.py" <<PY
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["post_office"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "$WORK/db.sqlite3",
                         "OPTIONS": {"timeout": 60}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# mail.send() renders subject and body as Django templates, even without a context.
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
EMAIL_BACKEND = "post_office.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = $PORT
EMAIL_TIMEOUT = 30
# Everything else (BATCH_SIZE 100, THREADS_PER_PROCESS 5, LOG_LEVEL 2) is post_office's default.
POST_OFFICE = {"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"}}
PY
export PYTHONPATH=$WORK DJANGO_SETTINGS_MODULE=bench_settings PYTHONDONTWRITEBYTECODE=1
cd "$WORK"

"$PY" -m django migrate -v 0
echo "django-post-office: queuing $MAILS mails of $SIZE bytes …"
"$PY" - "$MAILS" "$SIZE" <<'PY'
import sys
import django
django.setup()
from post_office import mail
n, size = int(sys.argv[1]), int(sys.argv[2])
# Lines of 64 characters: 5 KB is 80 lines of text (as scripts/bench.sh's run_queue).
body = "A line of the order confirmation, sixty-three characters long.\n" * (size // 64)
for first in range(1, n + 1, 1000):
    mail.send_many([
        dict(recipients=[f"customer{i}@customer.example"], sender='"Sales" <sales@mycompany.com>',
             subject=f"Order {i}", message=body, priority="medium")
        for i in range(first, min(first + 1000, n + 1))
    ])
PY

echo "django-post-office: send_queued_mail --processes=$PROCESSES …"
start=$(date +%s.%N)
"$PY" -m django send_queued_mail --processes="$PROCESSES" --lockfile="$WORK/lock" 2>"$WORK/send.log" ||
  { tail -n 20 "$WORK/send.log" >&2; exit 1; }
end=$(date +%s.%N)

read -r sent other < <("$PY" - <<'PY'
import django
django.setup()
from post_office.models import Email, STATUS
sent = Email.objects.filter(status=STATUS.sent).count()
print(sent, Email.objects.count() - sent)
PY
)
if [ "$sent" != "$MAILS" ]; then
  echo "django-post-office sent $sent of $MAILS mails ($other not sent):" >&2
  grep -v '^\[INFO\]' "$WORK/send.log" | tail -n 20 >&2
  exit 1
fi
printf 'django-post-office %s, %d process(es): %d mails of %d bytes in %.2f s\n' \
  "$POST_OFFICE_VERSION" "$PROCESSES" "$MAILS" "$SIZE" "$(echo "$end - $start" | bc -l)"
# Whole mails/s, or one decimal below 100 (at RTT 50 ms it sends some 20 a second).
echo "$MAILS / ($end - $start)" | bc -l | awk '{ printf($1 < 100 ? "%.1f\n" : "%.0f\n", $1) }' >&3
