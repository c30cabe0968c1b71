-- The buyer's region on an order (issue 10): the region the card or top-up is for, chosen
-- at checkout (or the product's own region for a regional product). The order events
-- carry it, so the risk engine's region rule sees real traffic.
ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT '';
