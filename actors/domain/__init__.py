"""Herald's rules, pure: no I/O, no clock (`now` comes in), so all of it is property-tested.

    rendering.py        templates: parse Mustache, compile and validate a template, render it
    template_choice.py  templates: the locale and the A/B variant a recipient gets
    channel_limits.py   what each channel's provider takes (SMS segments, push payload bytes)
    preferences.py      users' preferences: the per-channel plan, quiet hours, consent at fire time, unsubscribe tokens
    tokens.py           signed tokens (subscriber, unsubscribe) and the signing key ring's rotation
    api_keys.py         the API key format, what is stored of a key, who a request is from
    fingerprints.py     what makes two requests with one Idempotency-Key the same request
    write_planner.py    the Recorder's: status events and inbox changes -> the log store's write plan

Anything in actors/ may import domain; domain imports protocol and itself only.
"""
