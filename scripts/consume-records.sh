#!/bin/sh
# The Procfile's AMQP intake: `manage.py consume_records` when AMQP_URL is set (in the environment or .env),
# otherwise an idle process (honcho stops every process as soon as one exits).
if python manage.py consume_records --check-configured 2>/dev/null; then
    exec python manage.py consume_records
fi
echo "AMQP_URL is not set: the AMQP intake (consume_records) is off"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
