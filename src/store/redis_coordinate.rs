//! [`Coordinate`] for [`RedisStore`]: write generations, the conditional set and the resource
//! lock, each one Redis command or script on the group's keys.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use super::{fresh_generation, parse_generation, Backoff, RedisStore, FLIGHT_TTL};
use crate::{
    store::{CacheStore, Coordinate, Generation, LockToken, StoreError},
    CacheEntry, CacheKey, ResourceGroup,
};

impl Coordinate for RedisStore {
    fn generation<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> LocalBoxFuture<'a, Result<Generation, StoreError>> {
        Box::pin(async move {
            let resource = key.resource();
            let mut con = self.connection(Backoff::Respect).await?;
            let mut generation = self
                .inner
                .generation
                .key(self.group_generation_key(resource));
            generation
                .key(self.query_generation_key(resource, key.query()))
                .arg(fresh_generation())
                .arg(fresh_generation())
                .arg(u64::try_from(FLIGHT_TTL.as_millis()).unwrap_or(u64::MAX));
            let value: Vec<u8> = self.timed(generation.invoke_async(&mut con)).await?;
            parse_generation(&value).ok_or_else(|| {
                StoreError::Corrupt("a write generation is not 32 hex digits".into())
            })
        })
    }

    fn get_shared<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> LocalBoxFuture<'a, Result<Option<CacheEntry>, StoreError>> {
        Box::pin(self.get(key))
    }

    fn set_if_generation<'a>(
        &'a self,
        key: &'a CacheKey,
        entry: CacheEntry,
        generation: Generation,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.store(key, entry, Some(generation)))
    }

    fn try_lock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
        ttl: Duration,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let lock_key = self.lock_key(group);
            let mut con = self.connection(Backoff::Ignore).await?;
            let mut lock = self.inner.lock.key(&lock_key);
            lock.arg(token.value().to_string())
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
            let held: i64 = self.timed(lock.invoke_async(&mut con)).await?;
            Ok(held == 1)
        })
    }

    fn holds_lock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let lock_key = self.lock_key(group);
            let mut con = self.connection(Backoff::Ignore).await?;
            let mut get = redis::cmd("GET");
            get.arg(&lock_key);
            let holder: Option<String> = self.timed(get.query_async(&mut con)).await?;
            Ok(holder.is_some_and(|h| h == token.value().to_string()))
        })
    }

    fn unlock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let lock_key = self.lock_key(group);
            let mut con = self.connection(Backoff::Ignore).await?;
            let mut unlock = self.inner.unlock.key(&lock_key);
            unlock.arg(token.value().to_string());
            self.timed(unlock.invoke_async::<i64>(&mut con))
                .await
                .map(drop)
        })
    }
}
