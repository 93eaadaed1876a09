-- Answers from the channels pages go out on (sqlite dialect; kept in lockstep
-- with the other backend).

-- An SMS reply names the user by the number it came from.
CREATE INDEX contacts_address ON contacts (address);
-- A provider's delivery report names the message by the provider's id.
CREATE INDEX outbox_provider ON outbox (provider_id) WHERE provider_id IS NOT NULL;
