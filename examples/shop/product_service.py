"""product-service of the Skein demo shop: GET /product?product_id=N answers one product as JSON.

Python 3.11, standard library only; the HTTP plumbing is in shoplib.py. Reads PORT (required)
and SKEIN_INSTANCE_ID (reported as "served_by", default "local").

    PORT=8082 python3 product_service.py &
    curl 'http://127.0.0.1:8082/product?product_id=2'
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the example's directory
import shoplib  # noqa: E402

PRODUCTS = {
    1: {"id": 1, "name": "Skein of merino wool", "price_cents": 1250, "stock": 40},
    2: {"id": 2, "name": "Bamboo knitting needles", "price_cents": 899, "stock": 25},
    3: {"id": 3, "name": "Stitch markers (20)", "price_cents": 450, "stock": 120},
    4: {"id": 4, "name": "Pattern book: socks", "price_cents": 1999, "stock": 8},
    5: {"id": 5, "name": "Yarn swift", "price_cents": 3400, "stock": 0},
}

if __name__ == "__main__":
    sys.exit(shoplib.serve("product-service", {"/product": shoplib.record_route("product", "product_id", PRODUCTS)}))
