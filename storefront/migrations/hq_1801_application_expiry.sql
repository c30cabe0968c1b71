-- Pending partner applications expire (issue 12): a sweep moves an application nobody
-- reviewed within KAMENG_ONBOARDING_EXPIRY_DAYS to 'expired', which, like 'rejected',
-- frees its site name and domain (storefront/hq/onboarding.py FREED says the same).
ALTER TABLE partner_applications DROP CONSTRAINT partner_applications_status_check;
ALTER TABLE partner_applications ADD CONSTRAINT partner_applications_status_check
    CHECK (status IN ('pending', 'approved', 'provisioned', 'rejected', 'expired'));

DROP INDEX partner_applications_site;
CREATE UNIQUE INDEX partner_applications_site ON partner_applications (site_name)
    WHERE status NOT IN ('rejected', 'expired');
DROP INDEX partner_applications_domain;
CREATE UNIQUE INDEX partner_applications_domain ON partner_applications (domain)
    WHERE status NOT IN ('rejected', 'expired');
