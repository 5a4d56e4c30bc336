"""user-service of the Skein demo shop: GET /user?user_id=N answers one user as JSON.

Python 3.11, standard library only; the HTTP plumbing is in shoplib.py. Reads PORT (required)
and SKEIN_INSTANCE_ID (reported as "served_by", default "local").

    PORT=8081 python3 user_service.py &
    curl 'http://127.0.0.1:8081/user?user_id=1'
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the example's directory
import shoplib  # noqa: E402

USERS = {
    1: {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
    2: {"id": 2, "name": "Alan Turing", "email": "alan@example.com"},
    3: {"id": 3, "name": "Grace Hopper", "email": "grace@example.com"},
    4: {"id": 4, "name": "Edsger Dijkstra", "email": "edsger@example.com"},
    5: {"id": 5, "name": "Barbara Liskov", "email": "barbara@example.com"},
}

if __name__ == "__main__":
    sys.exit(shoplib.serve("user-service", {"/user": shoplib.record_route("user", "user_id", USERS)}))
