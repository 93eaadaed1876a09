-- Status updates and SMS bundling (sqlite dialect; kept in lockstep with the
-- other backend). Status updates are outbox rows too (reason
-- acknowledged | resolved | escalated_away); the sender looks up when a
-- number was last texted to hold a burst of pages into one text.
CREATE INDEX outbox_sms_recent ON outbox (address, sent_at) WHERE channel = 'sms';
